//! What the Redis writer knows of each symbol, and the Redis commands that publish it: trades
//! waiting for their `XADD`, the best bid/ask, the local order book (synced from a REST
//! snapshot and kept from depth diffs by Binance's procedure), rolling trade windows and
//! features. Applying events is pure; [`SymbolState::write`] appends one batch's coalesced
//! commands to a pipeline (a book is written once per batch, not once per diff).
//!
//! # Keys (all of one symbol share the hash tag `{SYMBOL}`, so they live in one cluster slot)
//! With `redis.keys = "plain"` the same keys without the braces (`trades:BTCUSDT`, the old
//! services' names); every name is made in [`super::keys`].
//! - `trades:{BTCUSDT}` — Stream, one entry per trade, id `<trade time ms>-<trade id>` (so a
//!   retried `XADD` of the same trade is refused by Redis instead of written twice; such a
//!   refusal is resolved by an `XRANGE` of that exact id, see [`PendingTrade::check`]), trimmed
//!   with `MAXLEN ~ redis.trades_maxlen`. Fields, seed 001's first: `exchange` (`binance`),
//!   `pair`, `price`, `qty` (exact decimal strings), `ts` (trade time, ISO-8601 UTC with
//!   microseconds), `side` (`buy` when the taker bought, i.e. the buyer was not the maker),
//!   `trade_id`, `raw_json` (only with `redis.raw_json = true`: the trade as Binance's
//!   `<s>@trade` JSON event, [`write_trade_json`]), then `event_time_us`, `trade_time_us`.
//! - `bbo:{BTCUSDT}` — Hash: `bid_price`, `bid_qty`, `ask_price`, `ask_qty`, `update_id`,
//!   `event_time_us`. While the symbol is removed or halted, `bbo:`, `tr:` and `feat:` also
//!   carry `stale` (`1`), `stale_reason` (as `ob:`'s: `removed: ...` or `halted: ...`) and
//!   `stale_since_us` beside their last values; the fields go when the symbol is back.
//! - `ob:{BTCUSDT}` — Hash, written in one `HSET` (of the fields that changed, each side only
//!   when its published top changed, see [`super::ob`]; or swapped in whole by the atomic
//!   re-anchor, [`super::reanchor`]) so readers never see a half-updated book: `update_id` (the
//!   exchange book update id this state matches exactly), `bids` and `asks` (JSON arrays of
//!   `["price","qty"]`, exact decimals, best first, at most `redis.book_levels`), `levels`,
//!   `event_time_us` (Binance's time of the last diff applied), `snapshot_update_id` and
//!   `synced_at_us` (the REST snapshot the book was last synced from, and when that state was
//!   swapped in, Unix µs), `checked_update_id` and `checked_at_us` (the last consistency check
//!   that agreed; 0 before one), `written_at_us` (when this state was written), `stale` (`0`:
//!   the book equals the exchange's at `update_id` and is kept current; `1`: not known to be
//!   current, readers must not trust it), `stale_reason` and `stale_since_us` (see
//!   [`super::ob`] for the reasons).
//! - `tr:{BTCUSDT}:1s`, `tr:{BTCUSDT}:5s` — Hash, written only when the window's content
//!   changed (a trade entered it, one left it as the symbol's clock passed, `trades_complete`
//!   flipped; not with every depth diff or best bid/ask): `count`, `volume`, `buy_volume`,
//!   `sell_volume`, `vwap`, `high`, `low`, `last` (decimal strings; empty when no trade in the
//!   window), `as_of_us` (the symbol's exchange time of the window's last change: the window
//!   ends there, and holds the same trades until the hash is written again),
//!   `trades_complete` (`1`: the window holds every trade up to `as_of_us`; `0`: trades of the
//!   symbol are held back waiting for the repair of missing ids, so the window lacks some: not
//!   current, whatever `as_of_us` says).
//! - `feat:{BTCUSDT}` — Hash: `mid` (exact, one decimal more than the price), `spread_bps`
//!   (4 decimals), `microprice` (two decimals more than the price, rounded half away from
//!   zero) — from the best bid/ask, or the book's top when no bestBidAsk stream —, `imbalance`
//!   (top-N book volume imbalance, -1..1, 6 decimals), `flow_imbalance_1s`,
//!   `flow_imbalance_5s` (taker buy minus sell volume over volume, 6 decimals),
//!   `book_update_id`, `as_of_us`, `trades_complete` (as in `tr:`, for the flow imbalances).
//!   `vwap` in `tr:` is rounded down at the price's decimals; volumes are exact. See
//!   [`crate::analytics`] for the rounding rules.
//!
//! - `kl:{BTCUSDT}:1m` (one per `[klines] intervals`, [`super::keys::kline`]) — Hash: `closed` (the
//!   candle closed last) and `open` (the candle trades are arriving for; absent between a
//!   closed candle and the next trade), each a JSON array as `GET /api/v3/klines` gives a
//!   kline (`[openTime, "open", "high", "low", "close", "volume", closeTime, "quoteVolume",
//!   trades, "takerBuyBaseVolume", "takerBuyQuoteVolume", "0"]`), `closed_missing` and
//!   `open_missing` (trade ids given up on that may lie in that candle, 0 when it is whole:
//!   [`crate::kline::Candle::missing_trades`]), and `as_of_ms` (the symbol's exchange clock at
//!   the write). Built from the trades delivered ([`crate::kline`]), written in one `HSET` so
//!   both candles always agree.
//!
//! Every hash of a symbol (`bbo:`, `ob:`, `tr:`, `feat:`) is written in one `HSET` of the fields
//! whose text changed since the last write Redis is known to hold ([`super::memo`]); every
//! field goes again after a failed or unanswered pipeline, a reconnect, and whatever else may
//! have changed the hash (a stale mark on `ob:`, a re-anchor's swap of `ob:`, `tr:`, `feat:`),
//! and after such an `HSET` created fields (its reply above 0: Redis lost the hash while the
//! writer stayed connected, [`PartialHsets`]).
//!
//! # Exponents
//! Prices and quantities are mantissas at a per-message exponent. The book and the best
//! bid/ask take theirs from the depth and bestBidAsk frames; the trade windows and `trades:`
//! entries from the first trades frame. A trades frame at other exponents (the sidecar builds
//! repaired trades at -8, whatever the live frames use) is converted to the windows' exponents
//! when that is exact; when it is not (a finer price), the windows are converted to the finer
//! exponents first. Mantissas of different exponents are never mixed.

use std::collections::VecDeque;
use std::fmt::Write as _;

use sbe_runtime::Decimal;

pub use super::keys::Keys;
use super::memo::HashMemo;
use super::ob::{BookSettings, Diff, DiffBudget, ObState, Wants, stale_mark};
use super::reanchor::NewState;
use crate::analytics::{TradeTick, TradeWindow, WindowStats, features};
use crate::config::{KeyLayout, KlinesConfig};
use crate::feed::event::StreamChange;
use crate::kline::{Candle, SymbolKlines};
use crate::sbe::spot_stream::{BoolEnum, Message, TradesStreamEventDecoder};

/// A trade waiting for its `XADD` to be acknowledged, with what its attempts so far tell.
#[derive(Clone, Debug)]
pub struct PendingTrade {
    /// The stream entry id, fixed when the trade arrived (retries reuse it).
    pub entry_id: String,
    /// Trade id.
    pub id: i64,
    price: Decimal,
    qty: Decimal,
    buyer_maker: bool,
    event_time_us: i64,
    trade_time_us: i64,
    /// When the frame was received, monotonic ns.
    pub recv_time_ns: u64,
    /// Pipelines that carried its `XADD`.
    pub attempts: u32,
    /// Unix ms of the first `XADD` (0 before).
    pub first_attempt_ms: i64,
    /// An `XADD` of it got no reply (connection lost, timeout): it may be in the stream.
    pub maybe_landed: bool,
    /// Its last `XADD` was refused as "equal or smaller than the target stream top item": the
    /// stream holds this id or a newer one. The next command for it is `XRANGE` of its exact
    /// id, which proves whether it is there; a trade is never counted as written without proof.
    pub check: bool,
    /// A command for it is in the pipeline in flight.
    pub in_flight: bool,
    /// The last error a command for it got.
    pub error: Option<String>,
}

/// The command a pipeline carried for one trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentTrade {
    /// The trade id.
    pub id: i64,
    /// `XRANGE` of its entry id (a check), not `XADD`.
    pub check: bool,
}

#[derive(Clone, Copy, Debug)]
struct Bbo {
    bid: i64,
    bid_qty: i64,
    ask: i64,
    ask_qty: i64,
    update_id: i64,
    event_time_us: i64,
}

/// Everything the writer keeps of one symbol.
#[derive(Debug)]
pub struct SymbolState {
    /// The symbol.
    pub name: String,
    /// Its keys.
    pub keys: Keys,
    /// The exponents of the book and best bid/ask (from depth and bestBidAsk frames).
    price_exponent: i8,
    qty_exponent: i8,
    /// The exponents of the trade windows' mantissas (from the first trades frame); `None`
    /// before one.
    trade_exponents: Option<(i8, i8)>,
    /// Trades of this symbol are held back waiting for a repair (set by the writer from its
    /// trade order before each write): the windows lack some.
    pub trades_held: bool,
    /// Trades not yet acknowledged by Redis, oldest first.
    pub pending: VecDeque<PendingTrade>,
    last_trade_id: i64,
    last_entry_ms: i64,
    bbo: Option<Bbo>,
    /// The order book and its Redis copy's standing.
    pub ob: ObState,
    win_1s: TradeWindow,
    win_5s: TradeWindow,
    now_us: i64,
    bbo_dirty: bool,
    /// `tr:{S}:1s` and `tr:{S}:5s` wait to be written: their window's content changed (a trade
    /// entered or left it, `trades_complete` flipped) since the last write.
    tr_dirty: [bool; 2],
    /// The symbol time of each window's last change: its hash's `as_of_us`.
    tr_changed_us: [i64; 2],
    /// The `trades_complete` the `tr:` fields were last built with.
    tr_complete: bool,
    /// `feat:{S}` waits to be written: the book, the best bid/ask or the trades changed.
    feat_dirty: bool,
    /// Trades taken out of `pending` because the outage buffer was full, oldest first: the
    /// writer moves them to the dead-letter file.
    pub evicted: Vec<PendingTrade>,
    /// Trades skipped as already seen (overlapping events).
    pub duplicates: u64,
    /// Trades whose mantissas could not be converted to the windows' exponents (an overflow;
    /// never seen with Binance's exponents).
    pub inconvertible: u64,
    /// The depth diff being applied (reused: no allocation per diff once it has grown).
    diff: Diff,
    /// Why the symbol's streams stopped (removed, or halted), while they are stopped: `bbo:`,
    /// `tr:` and `feat:` carry it as their stale mark, as `ob:` does.
    stopped: Option<String>,
    /// The stopped mark is still to be written.
    stopped_dirty: bool,
    /// The symbol came back: the stopped mark is still to be taken off.
    unmark: bool,
    /// Each `trades:` entry carries `raw_json` (`redis.raw_json`).
    raw_json: bool,
    /// Scratch text for the entry fields (reused: no allocation per trade once grown).
    scratch: String,
    /// Candles of the configured intervals ([`SymbolState::set_klines`]; none by default).
    klines: SymbolKlines,
    /// Their keys, by interval.
    kline_keys: Vec<String>,
    /// `klines.close_after_ms`.
    close_after_ms: i64,
    /// The candles changed since the last write.
    klines_dirty: bool,
    /// The symbol stopped: its candles are forgotten after their last write.
    klines_forget: bool,
    /// Candles closed (reused scratch: only the latest per interval is written).
    closed: Vec<(usize, Candle)>,
    /// The key layout (`redis.keys`), for the `kl:` keys.
    layout: KeyLayout,
    /// What Redis is known to hold of `bbo:{S}`, `tr:{S}:1s`, `tr:{S}:5s` and `feat:{S}`: their
    /// writes carry only the fields whose text changed ([`super::memo`]). Forgotten after a
    /// failed pipeline or a reconnect ([`SymbolState::mark_all_dirty`]), and for `tr:` and
    /// `feat:` around a re-anchor (its swap replaces them).
    bbo_memo: HashMemo,
    tr_memo: [HashMemo; 2],
    feat_memo: HashMemo,
    /// The `HSET`s of the last [`SymbolState::write`] that may leave fields out.
    partial: PartialHsets,
}

/// Where in a pipeline (command positions) a symbol's `HSET`s of hashes Redis is known to hold
/// whole are: each may leave fields out, and creates none (its reply is 0) unless Redis lost
/// the hash meanwhile (emptied, the key evicted or deleted, a node restarted empty behind the
/// Cluster client's own retry). At most one per memo (`bbo:`, `ob:`, `tr:` 1 s and 5 s,
/// `feat:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartialHsets {
    at: [usize; 5],
    len: usize,
}

impl PartialHsets {
    fn push(&mut self, at: usize) {
        if let Some(slot) = self.at.get_mut(self.len) {
            *slot = at;
            self.len += 1;
        }
    }

    /// The positions, counted from the pipeline's command `start`.
    #[must_use]
    pub fn since(mut self, start: usize) -> PartialHsets {
        for at in &mut self.at[..self.len] {
            *at = at.saturating_sub(start);
        }
        self
    }

    /// The positions.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.at[..self.len].iter().copied()
    }
}

/// Adds `memo`'s `HSET` of `key` to `pipe` when a field changed, noted in `partial` when it may
/// leave fields out (Redis is known to hold them).
fn add_hset(
    pipe: &mut redis::Pipeline,
    memo: &mut HashMemo,
    key: &str,
    partial: &mut PartialHsets,
) {
    let known = memo.known();
    if let Some(cmd) = memo.hset(key) {
        if known {
            partial.push(pipe.len());
        }
        pipe.add_command(cmd);
    }
}

/// The fields of `bbo:{S}`, in the order written.
const BBO_FIELDS: &[&str] = &[
    "bid_price",
    "bid_qty",
    "ask_price",
    "ask_qty",
    "update_id",
    "event_time_us",
];

/// The fields of `tr:{S}:1s` and `tr:{S}:5s`, in the order written.
const TR_FIELDS: &[&str] = &[
    "count",
    "volume",
    "buy_volume",
    "sell_volume",
    "vwap",
    "high",
    "low",
    "last",
    "as_of_us",
    "trades_complete",
];

/// The fields of `feat:{S}`, in the order written.
const FEAT_FIELDS: &[&str] = &[
    "mid",
    "spread_bps",
    "microprice",
    "imbalance",
    "flow_imbalance_1s",
    "flow_imbalance_5s",
    "book_update_id",
    "as_of_us",
    "trades_complete",
];

/// The fields of a stale mark on `bbo:`, `tr:` and `feat:` (set while the symbol is stopped).
const STOPPED_FIELDS: [&str; 3] = ["stale", "stale_reason", "stale_since_us"];

impl SymbolState {
    /// A symbol with nothing known yet (its book marked stale `starting`).
    pub fn new(name: &str, book: BookSettings) -> SymbolState {
        SymbolState {
            name: name.to_string(),
            keys: Keys::of(name),
            price_exponent: -8,
            qty_exponent: -8,
            trade_exponents: None,
            trades_held: false,
            pending: VecDeque::new(),
            last_trade_id: i64::MIN,
            last_entry_ms: 0,
            bbo: None,
            ob: ObState::new(book),
            win_1s: TradeWindow::new(1_000_000),
            win_5s: TradeWindow::new(5_000_000),
            now_us: 0,
            bbo_dirty: false,
            tr_dirty: [false; 2],
            tr_changed_us: [0; 2],
            tr_complete: true,
            feat_dirty: false,
            evicted: Vec::new(),
            duplicates: 0,
            inconvertible: 0,
            diff: Diff {
                first: 0,
                last: 0,
                event_time_us: 0,
                bids: Vec::new(),
                asks: Vec::new(),
            },
            stopped: None,
            stopped_dirty: false,
            unmark: false,
            raw_json: false,
            scratch: String::new(),
            klines: SymbolKlines::default(),
            kline_keys: Vec::new(),
            close_after_ms: 0,
            klines_dirty: false,
            klines_forget: false,
            closed: Vec::new(),
            layout: KeyLayout::HashTag,
            bbo_memo: HashMemo::new(BBO_FIELDS),
            tr_memo: [HashMemo::new(TR_FIELDS), HashMemo::new(TR_FIELDS)],
            feat_memo: HashMemo::new(FEAT_FIELDS),
            partial: PartialHsets::default(),
        }
    }

    /// The same symbol with its keys named in `layout` and, when `raw_json`, the `raw_json`
    /// field in each `trades:` entry (`redis.keys`, `redis.raw_json`).
    #[must_use]
    pub fn with_format(mut self, layout: KeyLayout, raw_json: bool) -> SymbolState {
        self.keys = Keys::with(layout, &self.name);
        self.layout = layout;
        self.raw_json = raw_json;
        self
    }

    /// Builds candles of `config`'s intervals from the trades taken from now on.
    pub fn set_klines(&mut self, config: &KlinesConfig) {
        self.klines = SymbolKlines::new(&config.intervals);
        self.kline_keys = config
            .intervals
            .iter()
            .map(|i| super::keys::kline(self.layout, &self.name, i.name))
            .collect();
        self.close_after_ms = config.close_after_ms;
    }

    /// The symbol's exchange clock is at `now_ms` (any of its frames): a quiet candle may
    /// close. `held`: trades of the symbol wait for a repair (one may belong to it).
    pub fn kline_clock(&mut self, now_ms: i64, held: bool) {
        let mut closed = std::mem::take(&mut self.closed);
        self.klines
            .advance(now_ms, self.close_after_ms, held, &mut closed);
        self.klines_dirty |= !closed.is_empty();
        closed.clear();
        self.closed = closed;
    }

    /// The symbol's connection was lost or is back: while its trades since are unknown, its
    /// clock closes no candle ([`SymbolKlines::connection_lost`]).
    pub fn klines_connection(&mut self, change: StreamChange) {
        match change {
            StreamChange::Disconnected => self.klines.connection_lost(),
            StreamChange::Reconnected => self.klines.reconnected(),
            _ => {}
        }
    }

    /// Trades left out of the candles as late.
    pub fn klines_late(&self) -> u64 {
        self.klines.late()
    }

    /// The symbol's streams stopped for `reason` (removed, halted): its `bbo:`, `tr:` and
    /// `feat:` keys are marked stale as its book is (their values are the last ones seen).
    pub fn stop(&mut self, reason: &str) {
        // Its candles would miss the trades of the time it is away: they start afresh (the
        // `kl:` hashes keep their last candles, marked like the other keys). Trades the sink
        // released at the removal (held behind a gap it gave up) may have marked the closed
        // candle: written first, then forgotten (or when a frame of the symbol comes back).
        self.klines_forget = true;
        if !self.klines_dirty {
            self.forget_klines();
        }
        self.stopped = Some(reason.to_string());
        self.stopped_dirty = true;
        self.unmark = false;
    }

    /// A frame of a stopped symbol: it is back, and the stale marks come off.
    fn resume(&mut self) {
        self.forget_klines();
        if self.stopped.take().is_some() {
            self.stopped_dirty = false;
            self.unmark = true;
        }
    }

    /// The stopped mark (or its removal) for [`SymbolState::write`]: a script per key that
    /// touches only an existing key, or an `HDEL` of the mark's fields.
    fn write_stopped(&mut self, pipe: &mut redis::Pipeline, now_us: i64) {
        let keys = [
            &self.keys.bbo,
            &self.keys.tr_1s,
            &self.keys.tr_5s,
            &self.keys.feat,
        ]
        .into_iter()
        .chain(&self.kline_keys);
        if std::mem::take(&mut self.stopped_dirty)
            && let Some(reason) = &self.stopped
        {
            for key in keys {
                pipe.add_command(stale_mark(key, reason, now_us));
            }
        } else if std::mem::take(&mut self.unmark) {
            for key in keys {
                pipe.hdel(key, &STOPPED_FIELDS);
            }
        }
    }

    /// The `HSET`s of the last [`SymbolState::write`] that may leave fields out (positions in
    /// its pipeline).
    pub fn partial_hsets(&self) -> PartialHsets {
        self.partial
    }

    /// The exponents of this symbol's prices and quantities (from its frames).
    pub fn exponents(&self) -> (i8, i8) {
        (self.price_exponent, self.qty_exponent)
    }

    /// The book's update id when it is live.
    pub fn book_update_id(&self) -> Option<i64> {
        self.ob.live().map(crate::book::LocalBook::update_id)
    }

    /// Whether something waits to be written.
    pub fn dirty(&self) -> bool {
        !self.pending.is_empty()
            || self.stopped_dirty
            || self.unmark
            || self.klines_dirty
            || self.bbo_dirty
            || self.ob.dirty()
            // While a re-anchor is in flight, its swap writes these.
            || (self.stats_dirty() && !self.ob.anchoring())
    }

    /// Whether `tr:` or `feat:` waits to be written.
    fn stats_dirty(&self) -> bool {
        self.tr_dirty[0] || self.tr_dirty[1] || self.feat_dirty
    }

    /// `tr:` and `feat:` are all written again (with what they hold now), every field.
    fn stats_all_dirty(&mut self) {
        let known = self.now_us > 0;
        self.tr_dirty = [known; 2];
        self.feat_dirty = known;
        self.forget_stats();
    }

    /// Redis may hold something else in `tr:` and `feat:` than the writes sent: their next
    /// writes carry every field.
    fn forget_stats(&mut self) {
        for memo in &mut self.tr_memo {
            memo.forget();
        }
        self.feat_memo.forget();
    }

    /// The symbol's clock is at `time_us` (an event's time) if that is later. The first time
    /// it starts, the (empty) windows are written.
    fn clock(&mut self, time_us: i64) {
        let first = self.now_us <= 0;
        self.now_us = self.now_us.max(time_us);
        if first && self.now_us > 0 {
            self.window_changed(0);
            self.window_changed(1);
        }
    }

    /// Window `at` (0: 1 s, 1: 5 s) changed now: its `tr:` hash and `feat:` wait to be written.
    fn window_changed(&mut self, at: usize) {
        self.tr_dirty[at] = true;
        self.tr_changed_us[at] = self.now_us;
        self.feat_dirty = true;
    }

    /// After a reconnect: everything known is written again (Redis may have lost it).
    pub fn mark_all_dirty(&mut self) {
        self.bbo_dirty = self.bbo.is_some();
        self.bbo_memo.forget();
        self.klines_dirty = self
            .klines
            .series
            .iter()
            .any(|s| s.closed().is_some() || s.open().is_some());
        self.ob.rewrite();
        self.stats_all_dirty();
        // Redis may have lost the mark, or the failed pipeline its removal.
        self.stopped_dirty = self.stopped.is_some();
        self.unmark = self.stopped.is_none();
    }

    /// Applies one decoded frame. `buffer_max` bounds the trades held (Redis down), `diffs`
    /// the depth diffs held across symbols.
    pub fn on_frame(
        &mut self,
        message: &Message<'_>,
        recv_time_ns: u64,
        buffer_max: usize,
        diffs: &mut DiffBudget,
    ) -> Wants {
        self.resume();
        match message {
            Message::TradesStreamEvent(m) => {
                self.on_trades(m, i64::MIN, recv_time_ns, buffer_max);
                Wants::Nothing
            }
            Message::BestBidAskStreamEvent(m) => {
                self.price_exponent = m.price_exponent();
                self.qty_exponent = m.qty_exponent();
                self.clock(m.event_time());
                if self.bbo.is_none_or(|b| m.book_update_id() > b.update_id) {
                    self.bbo = Some(Bbo {
                        bid: m.bid_price(),
                        bid_qty: m.bid_qty(),
                        ask: m.ask_price(),
                        ask_qty: m.ask_qty(),
                        update_id: m.book_update_id(),
                        event_time_us: m.event_time(),
                    });
                    self.bbo_dirty = true;
                    self.feat_dirty = true;
                }
                self.advance_windows();
                Wants::Nothing
            }
            Message::DepthDiffStreamEvent(m) => {
                self.price_exponent = m.price_exponent();
                self.qty_exponent = m.qty_exponent();
                self.clock(m.event_time());
                self.advance_windows();
                let diff = &mut self.diff;
                diff.first = m.first_book_update_id();
                diff.last = m.last_book_update_id();
                diff.event_time_us = m.event_time();
                diff.bids.clear();
                diff.bids.extend(m.bids().map(|l| (l.price(), l.qty())));
                diff.asks.clear();
                diff.asks.extend(m.asks().map(|l| (l.price(), l.qty())));
                let wants = self.ob.on_diff(&self.diff, diffs);
                if self.ob.book_dirty {
                    self.feat_dirty = true;
                }
                wants
            }
            // depth20 snapshots are not the book's source: the diff stream is exact.
            Message::DepthSnapshotStreamEvent(_) => Wants::Nothing,
        }
    }

    /// Applies a trades event from trade id `from` on (the sink's trade order delivered the
    /// ids before it already; they count as duplicates, like ids at or below the last one
    /// taken). `buffer_max` bounds the trades held (Redis down).
    pub fn on_trades(
        &mut self,
        m: &TradesStreamEventDecoder<'_>,
        from: i64,
        recv_time_ns: u64,
        buffer_max: usize,
    ) {
        self.resume();
        self.clock(m.event_time());
        let frame_exponents = (m.price_exponent(), m.qty_exponent());
        let (pe, qe) = self.trade_exponents_for(m, frame_exponents);
        let trade_time_us = m.transact_time();
        let mut entered = false;
        if !self.klines.series.is_empty() {
            let mut closed = std::mem::take(&mut self.closed);
            let kline_from = from.max(self.last_trade_id.saturating_add(1));
            self.klines.on_trades(m, kline_from, &mut closed);
            closed.clear();
            self.closed = closed;
            self.klines_dirty = true;
        }
        for t in m.trades() {
            let id = t.id();
            if id < from || id <= self.last_trade_id {
                self.duplicates += 1;
                continue;
            }
            self.last_trade_id = id;
            let buyer_maker = t.is_buyer_maker() == Some(BoolEnum::True);
            let (price, qty) = match (
                rescale(t.price(), frame_exponents.0, pe),
                rescale(t.qty(), frame_exponents.1, qe),
            ) {
                (Some(price), Some(qty)) => {
                    let tick = TradeTick {
                        time_us: trade_time_us,
                        price,
                        qty,
                        buyer_maker,
                    };
                    self.win_1s.push(tick);
                    self.win_5s.push(tick);
                    entered = true;
                    (Decimal::new(price, pe), Decimal::new(qty, qe))
                }
                // Only when the windows could not take the frame's exponents (an overflow):
                // counted and kept out of the windows (never rounded into them), but the trade
                // still goes to `trades:` at its own exponents (a trade is never dropped).
                _ => {
                    self.inconvertible += 1;
                    let (fp, fq) = frame_exponents;
                    (Decimal::new(t.price(), fp), Decimal::new(t.qty(), fq))
                }
            };
            let ms = (trade_time_us.div_euclid(1000))
                .max(self.last_entry_ms)
                .max(0);
            self.last_entry_ms = ms;
            if self.pending.len() >= buffer_max
                && let Some(oldest) = self.pending.pop_front()
            {
                self.evicted.push(oldest);
            }
            self.pending.push_back(PendingTrade {
                entry_id: format!("{ms}-{id}"),
                id,
                price,
                qty,
                buyer_maker,
                event_time_us: m.event_time(),
                trade_time_us,
                recv_time_ns,
                attempts: 0,
                first_attempt_ms: 0,
                maybe_landed: false,
                check: false,
                in_flight: false,
                error: None,
            });
        }
        self.advance_windows();
        if entered {
            self.window_changed(0);
            self.window_changed(1);
        }
        self.feat_dirty = true;
    }

    /// Drops the trades older than each window at the symbol's clock: on every event, so the
    /// windows stay within their span while nothing is written (Redis down) too. A window a
    /// trade left is written.
    fn advance_windows(&mut self) {
        let before = [self.win_1s.len(), self.win_5s.len()];
        self.win_1s.advance(self.now_us);
        self.win_5s.advance(self.now_us);
        if self.win_1s.len() != before[0] {
            self.window_changed(0);
        }
        if self.win_5s.len() != before[1] {
            self.window_changed(1);
        }
    }

    /// The exponents this trades frame's mantissas are converted to: the windows' (set by the
    /// first trades frame). When a trade of the frame is not exact at them, the windows move to
    /// the finer exponents first (their mantissas scaled up, exactly); if that overflows, the
    /// windows start afresh at the frame's exponents.
    fn trade_exponents_for(
        &mut self,
        m: &TradesStreamEventDecoder<'_>,
        (fp, fq): (i8, i8),
    ) -> (i8, i8) {
        let Some((wp, wq)) = self.trade_exponents else {
            self.trade_exponents = Some((fp, fq));
            return (fp, fq);
        };
        let exact = m
            .trades()
            .all(|t| rescale(t.price(), fp, wp).is_some() && rescale(t.qty(), fq, wq).is_some());
        if exact {
            return (wp, wq);
        }
        let finer = (wp.min(fp), wq.min(fq));
        let digits = |w: i8, f: i8| (i16::from(w) - i16::from(f)).unsigned_abs();
        let (dp, dq) = (digits(wp, finer.0), digits(wq, finer.1));
        if !(self.win_1s.rescale(dp, dq) && self.win_5s.rescale(dp, dq)) {
            self.win_1s = TradeWindow::new(1_000_000);
            self.win_5s = TradeWindow::new(5_000_000);
        }
        // Printed at other exponents (or emptied).
        self.window_changed(0);
        self.window_changed(1);
        self.trade_exponents = Some(finer);
        finer
    }

    /// Appends this batch's commands to `pipe`: for each of the oldest pending trades (at most
    /// `trades_max`) an `XADD`, or an `XRANGE` of its id when it is to be checked, recorded in
    /// `sent` in order; then the other keys' commands. Clears the dirty flags (the caller
    /// restores them with [`SymbolState::mark_all_dirty`] if the pipeline fails). Returns how
    /// many trades the commands cover. `now_us` is the writer's clock (Unix µs).
    pub fn write(
        &mut self,
        pipe: &mut redis::Pipeline,
        (maxlen, trades_max): (usize, usize),
        now_us: i64,
        sent: &mut Vec<SentTrade>,
    ) -> usize {
        self.partial = PartialHsets::default();
        let count = self.write_trades(pipe, (maxlen, trades_max), now_us / 1000, sent);
        let (pe, qe) = (self.price_exponent, self.qty_exponent);
        if self.bbo_dirty
            && let Some(b) = self.bbo
        {
            let memo = &mut self.bbo_memo;
            for (at, (m, e)) in [(b.bid, pe), (b.bid_qty, qe), (b.ask, pe), (b.ask_qty, qe)]
                .into_iter()
                .enumerate()
            {
                memo.set_decimal(at, Some(Decimal::new(m, e)));
            }
            memo.set_int(4, b.update_id);
            memo.set_int(5, b.event_time_us);
            add_hset(pipe, memo, &self.keys.bbo, &mut self.partial);
        }
        self.bbo_dirty = false;
        if let Some(memo) = self.ob.whole_write((pe, qe), now_us) {
            add_hset(pipe, memo, &self.keys.ob, &mut self.partial);
        }
        if let Some((reason, since_us)) = self.ob.stale_write(now_us) {
            pipe.add_command(stale_mark(&self.keys.ob, &reason, since_us));
        }
        // While a re-anchor is in flight its swap replaces these keys whole: they wait for it.
        if self.now_us > 0 && !self.ob.anchoring() {
            self.write_stats(pipe);
        }
        self.write_stopped(pipe, now_us);
        self.write_klines(pipe);
        count
    }

    /// Each interval's `kl:` hash: the last closed and the open candle, each with the count of
    /// trade ids given up on that may lie in it (`closed_missing`, `open_missing`), one `HSET`;
    /// the open fields go when no candle is open.
    fn write_klines(&mut self, pipe: &mut redis::Pipeline) {
        if !std::mem::take(&mut self.klines_dirty) {
            return;
        }
        let as_of_ms = self.now_us.div_euclid(1000).to_string();
        // Removed: the open candle will never close, it goes.
        let removed = self.klines_forget;
        for (series, key) in self.klines.series.iter().zip(&self.kline_keys) {
            let mut fields = vec![("as_of_ms", as_of_ms.clone())];
            if let Some(c) = series.closed() {
                fields.push(("closed", c.rest_json()));
                fields.push(("closed_missing", c.missing_trades.to_string()));
            }
            match series.open().filter(|_| !removed) {
                Some(c) => {
                    fields.push(("open", c.rest_json()));
                    fields.push(("open_missing", c.missing_trades.to_string()));
                }
                None => {
                    pipe.hdel(key, &["open", "open_missing"]);
                }
            }
            pipe.hset_multiple(key, &fields);
        }
        self.forget_klines();
    }

    /// The candles of a stopped symbol are forgotten once written ([`SymbolState::stop`]).
    fn forget_klines(&mut self) {
        if std::mem::take(&mut self.klines_forget) {
            self.klines.forget();
        }
    }

    /// The trade commands of [`SymbolState::write`].
    fn write_trades(
        &mut self,
        pipe: &mut redis::Pipeline,
        (maxlen, trades_max): (usize, usize),
        now_ms: i64,
        sent: &mut Vec<SentTrade>,
    ) -> usize {
        let count = self.pending.len().min(trades_max);
        let mut text = std::mem::take(&mut self.scratch);
        for at in 0..count {
            let Some(t) = self.pending.get(at) else { break };
            if t.check {
                pipe.cmd("XRANGE")
                    .arg(&self.keys.trades)
                    .arg(&t.entry_id)
                    .arg(&t.entry_id);
            } else {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&self.keys.trades)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(maxlen)
                    .arg(&t.entry_id);
                self.fields(t, &mut text, |name, value| {
                    cmd.arg(name).arg(value);
                });
                pipe.add_command(cmd);
            }
            sent.push(SentTrade {
                id: t.id,
                check: t.check,
            });
            if let Some(t) = self.pending.get_mut(at) {
                t.in_flight = true;
                if !t.check {
                    t.attempts = t.attempts.saturating_add(1);
                    if t.first_attempt_ms == 0 {
                        t.first_attempt_ms = now_ms;
                    }
                }
            }
        }
        self.scratch = text;
        count
    }

    /// The `tr:` hashes whose window changed and `feat:` if it changed, each in one `HSET`.
    /// A flip of `trades_complete` (trades held back for a repair, or no longer) changes both
    /// windows.
    fn write_stats(&mut self, pipe: &mut redis::Pipeline) {
        if self.complete_flipped() {
            self.window_changed(0);
            self.window_changed(1);
        }
        if !self.stats_dirty() {
            return;
        }
        if self.ob.swapping() {
            // A swap overtaken by a resync may land after these writes: they go whole.
            self.forget_stats();
        }
        let (s1, s5) = self.window_stats();
        for (at, s) in [(0, &s1), (1, &s5)] {
            if std::mem::take(&mut self.tr_dirty[at]) {
                let mut memo = std::mem::take(&mut self.tr_memo[at]);
                self.tr_fields(&mut memo, at, s);
                let key = if at == 0 {
                    &self.keys.tr_1s
                } else {
                    &self.keys.tr_5s
                };
                add_hset(pipe, &mut memo, key, &mut self.partial);
                self.tr_memo[at] = memo;
            }
        }
        if std::mem::take(&mut self.feat_dirty) {
            // The book's top, copied once per write for the features and `ob:` both.
            self.ob.refresh_top();
            let mut memo = std::mem::take(&mut self.feat_memo);
            self.feature_fields(&mut memo, &s1, &s5);
            add_hset(pipe, &mut memo, &self.keys.feat, &mut self.partial);
            self.feat_memo = memo;
        }
    }

    /// Whether `trades_complete` (not `trades_held`) differs from what the `tr:` fields were
    /// last built with.
    fn complete_flipped(&self) -> bool {
        // complete = !held, so complete != built exactly when held == built.
        self.trades_held == self.tr_complete
    }

    /// The statistics of both windows at the symbol's clock.
    fn window_stats(&mut self) -> (WindowStats, WindowStats) {
        let now = self.now_us;
        (self.win_1s.stats(now), self.win_5s.stats(now))
    }

    /// Sets the fields of window `at`'s `tr:` hash (0: 1 s, 1: 5 s) from its statistics `s`
    /// into `memo`; `as_of_us` is the symbol time of the window's last change.
    fn tr_fields(&mut self, memo: &mut HashMemo, at: usize, s: &WindowStats) {
        let exponents = self
            .trade_exponents
            .unwrap_or((self.price_exponent, self.qty_exponent));
        self.tr_complete = !self.trades_held;
        window_fields(memo, s, exponents, self.tr_changed_us[at], self.tr_complete);
    }

    /// The fields of `tr:{S}:1s`, `tr:{S}:5s` and `feat:{S}` now.
    fn stats_fields(&mut self) -> [Vec<(&'static str, String)>; 3] {
        if self.complete_flipped() {
            // Built with the flipped flag below: the window's change is now.
            self.tr_changed_us = [self.now_us; 2];
        }
        // The book's top, copied once per write for the features and `ob:` both.
        self.ob.refresh_top();
        let (s1, s5) = self.window_stats();
        let mut memos = [
            HashMemo::new(TR_FIELDS),
            HashMemo::new(TR_FIELDS),
            HashMemo::new(FEAT_FIELDS),
        ];
        let [tr_1s, tr_5s, feat] = &mut memos;
        self.tr_fields(tr_1s, 0, &s1);
        self.tr_fields(tr_5s, 1, &s5);
        self.feature_fields(feat, &s1, &s5);
        memos.map(|mut memo| memo.fields())
    }

    /// Starts a re-anchor of this symbol: the attempt number and the whole new state (`ob` at
    /// the live book's update id with `stale` 0, the trade windows, the features), or `None`
    /// when the book is not live. The caller reports the outcome to
    /// [`ObState::end_reanchor`].
    pub fn begin_reanchor(&mut self, now_us: i64) -> Option<(u64, NewState)> {
        let exponents = (self.price_exponent, self.qty_exponent);
        let (attempt, ob) = self.ob.begin_reanchor(exponents, now_us)?;
        let [tr_1s, tr_5s, feat] = self.stats_fields();
        // The swap writes the windows and features too (whole: what Redis holds of them is
        // known again only after a whole write once it ended).
        self.tr_dirty = [false; 2];
        self.feat_dirty = false;
        self.forget_stats();
        Some((
            attempt,
            NewState {
                ob,
                tr_1s,
                tr_5s,
                feat,
            },
        ))
    }

    /// A re-anchor of this symbol ended ([`ObState::end_reanchor`]). Its swap replaced `tr:`
    /// and `feat:` whole with what they were when it began, and may have landed after the
    /// stopped mark (or landed though it got no answer): a stopped symbol's mark is written
    /// again. A swap not known to have landed leaves `tr:` and `feat:` as they were before it
    /// began: they are written again. So does a swap overtaken by a resync while in flight: the
    /// writes of `tr:` and `feat:` resumed then, and a newer window written meanwhile may have
    /// landed before the swap's older one.
    pub fn end_reanchor(&mut self, attempt: u64, swapped: bool, retry_at_us: i64) {
        let current = self.ob.end_reanchor(attempt, swapped, retry_at_us);
        if !(current && swapped) {
            self.stats_all_dirty();
        }
        self.forget_stats();
        if self.stopped.is_some() {
            self.stopped_dirty = true;
        }
    }

    /// Sets the fields of `feat:{S}` into `memo`.
    fn feature_fields(&self, memo: &mut HashMemo, s1: &WindowStats, s5: &WindowStats) {
        let pe = self.price_exponent;
        // Refreshed by the caller ([`SymbolState::stats_fields`]); empty when not live.
        let (bids, asks) = self.ob.top();
        let book = features(bids, asks, pe);
        let from_top = match self.bbo {
            Some(b) => features(&[(b.bid, b.bid_qty)], &[(b.ask, b.ask_qty)], pe),
            None => book,
        };
        let imbalance = book.map(|f| f.imbalance);
        let values = [
            from_top.map(|f| f.mid),
            from_top.map(|f| f.spread_bps),
            from_top.map(|f| f.microprice),
            imbalance,
            s1.flow_imbalance(),
            s5.flow_imbalance(),
        ];
        for (at, v) in values.into_iter().enumerate() {
            memo.set_decimal(at, v);
        }
        memo.set_opt_int(6, self.ob.live().map(crate::book::LocalBook::update_id));
        memo.set_int(7, self.now_us);
        memo.set_flag(8, !self.trades_held);
    }

    /// Calls `f` with each field of `t`'s stream entry, in order: seed 001's fields first
    /// (`raw_json` only with `redis.raw_json`), then the exact times. `text` is scratch space:
    /// nothing is allocated once it has grown.
    pub fn fields(&self, t: &PendingTrade, text: &mut String, mut f: impl FnMut(&str, &str)) {
        f("exchange", "binance");
        f("pair", &self.name);
        let mut put = |name: &str, write: &dyn Fn(&mut String)| {
            text.clear();
            write(text);
            f(name, text);
        };
        put("price", &|out| {
            let _ = write!(out, "{}", t.price);
        });
        put("qty", &|out| {
            let _ = write!(out, "{}", t.qty);
        });
        put("ts", &|out| write_iso8601_us(out, t.trade_time_us));
        put("side", &|out| {
            out.push_str(if t.buyer_maker { "sell" } else { "buy" });
        });
        put("trade_id", &|out| {
            let _ = write!(out, "{}", t.id);
        });
        if self.raw_json {
            put("raw_json", &|out| write_trade_json(out, &self.name, t));
        }
        put("event_time_us", &|out| {
            let _ = write!(out, "{}", t.event_time_us);
        });
        put("trade_time_us", &|out| {
            let _ = write!(out, "{}", t.trade_time_us);
        });
    }

    /// The fields of `t`'s stream entry, in order, owned (for the dead-letter file).
    pub fn entry_fields(&self, t: &PendingTrade) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(9);
        let mut text = String::new();
        self.fields(t, &mut text, |name, value| {
            out.push((name.to_string(), value.to_string()));
        });
        out
    }

    /// The pending trade of id `id`, if it is still pending (ids are kept in increasing order).
    pub fn pending_mut(&mut self, id: i64) -> Option<&mut PendingTrade> {
        let at = self.pending.binary_search_by_key(&id, |t| t.id).ok()?;
        self.pending.get_mut(at)
    }

    /// After a pipeline that got no reply: its `XADD`s may have landed.
    pub fn unanswered(&mut self) {
        for t in self.pending.iter_mut().filter(|t| t.in_flight) {
            t.in_flight = false;
            t.maybe_landed |= !t.check;
        }
    }
}

/// `m x 10^from` as a mantissa at `10^to`, when exact and in range.
fn rescale(m: i64, from: i8, to: i8) -> Option<i64> {
    let digits = i16::from(from) - i16::from(to);
    let scale = 10i64.checked_pow(u32::from(digits.unsigned_abs()))?;
    if digits >= 0 {
        m.checked_mul(scale)
    } else {
        (m % scale == 0).then_some(m / scale)
    }
}

/// Sets the fields of a `tr:` hash from the window's statistics `s` into `memo`.
fn window_fields(
    memo: &mut HashMemo,
    s: &WindowStats,
    (pe, qe): (i8, i8),
    now_us: i64,
    complete: bool,
) {
    memo.set_int(0, i64::try_from(s.count).unwrap_or(i64::MAX));
    for (at, m) in [(1, s.volume), (2, s.buy_volume), (3, s.sell_volume)] {
        // The high and low halves of the sum (truncating casts), and the exponent.
        let key = [(m >> 64) as i64, m as i64, i64::from(qe)];
        memo.set_keyed(at, key, |out| push_wide_decimal(out, m, qe));
    }
    for (at, m) in [(4, s.vwap()), (5, s.high), (6, s.low), (7, s.last)] {
        memo.set_decimal(at, m.map(|m| Decimal::new(m, pe)));
    }
    memo.set_int(8, now_us);
    memo.set_flag(9, complete);
}

/// Appends `m x 10^e` as exact decimal text, for sums beyond an `i64` mantissa too (the same
/// text [`Decimal`] prints when the mantissa fits).
fn push_wide_decimal(out: &mut String, m: i128, e: i8) {
    if let Ok(m) = i64::try_from(m) {
        Decimal::new(m, e).push_to(out);
        return;
    }
    let digits = m.unsigned_abs().to_string();
    if m < 0 {
        out.push('-');
    }
    let scale = usize::from(e.unsigned_abs());
    if e >= 0 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', scale));
    } else if digits.len() > scale {
        let (int_part, frac_part) = digits.split_at(digits.len() - scale);
        out.push_str(int_part);
        out.push('.');
        out.push_str(frac_part);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    }
}

/// Appends `t` as Binance's `<s>@trade` JSON event, keys in Binance's order:
/// `{"e":"trade","E":<event ms>,"s":"BTCUSDT","t":<id>,"p":"<price>","q":"<qty>","T":<trade
/// ms>,"m":<buyer is maker>,"M":true}`. Prices and quantities are printed with as many
/// decimals as their exponent says (8 for Binance's -8, as its JSON prints them), times are
/// milliseconds (floored), and `M` (Binance: "Ignore") is always true, as SBE's constant
/// `isBestMatch`. In JSON mode this gives back the payload as received: the transcoded frame
/// keeps every decimal and millisecond of it.
pub fn write_trade_json(out: &mut String, symbol: &str, t: &PendingTrade) {
    use sbe_runtime::json;
    let mut object = json::Object::begin(out);
    json::write_str(object.key("e"), b"trade");
    json::write_number(object.key("E"), t.event_time_us.div_euclid(1000));
    json::write_str(object.key("s"), symbol.as_bytes());
    json::write_number(object.key("t"), t.id);
    json::write_display_str(object.key("p"), t.price);
    json::write_display_str(object.key("q"), t.qty);
    json::write_number(object.key("T"), t.trade_time_us.div_euclid(1000));
    json::write_number(object.key("m"), t.buyer_maker);
    json::write_number(object.key("M"), true);
    object.end();
}

/// `2024-11-14T17:30:00.123456Z` for Unix microseconds.
pub fn iso8601_us(us: i64) -> String {
    let mut out = String::with_capacity(27);
    write_iso8601_us(&mut out, us);
    out
}

/// Appends [`iso8601_us`]'s text to `out` (no allocation once `out` has room).
pub fn write_iso8601_us(out: &mut String, us: i64) {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_json_is_the_binance_trade_event_and_plain_keys_name_the_stream() {
        let frame = trades_frame(
            1_763_700_000_123_456,
            (-8, -8),
            &[(42, 6_976_988_000_000, 1_301_000)],
        );
        let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(&frame) else {
            panic!("a trades frame");
        };
        let mut state = SymbolState::new("BTCUSDT", BookSettings::new(5, 100))
            .with_format(KeyLayout::Plain, true);
        state.on_trades(&m, i64::MIN, 0, 10);
        let t = state.pending.front().expect("a trade").clone();
        let fields = state.entry_fields(&t);
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "exchange",
                "pair",
                "price",
                "qty",
                "ts",
                "side",
                "trade_id",
                "raw_json",
                "event_time_us",
                "trade_time_us"
            ],
            "seed 001's fields first, in its order"
        );
        assert_eq!(
            fields[7].1,
            r#"{"e":"trade","E":1763700000123,"s":"BTCUSDT","t":42,"p":"69769.88000000","q":"0.01301000","T":1763700000123,"m":false,"M":true}"#
        );
        assert_eq!(fields[4].1, "2025-11-21T04:40:00.123456Z");
        let mut pipe = redis::pipe();
        let mut sent = Vec::new();
        state.write(&mut pipe, (100, 10), 0, &mut sent);
        let packed = String::from_utf8_lossy(&pipe.get_packed_pipeline()).to_string();
        assert!(packed.contains("\r\ntrades:BTCUSDT\r\n"), "{packed}");
        assert!(
            !packed.contains('{') || packed.contains("raw_json"),
            "{packed}"
        );

        let plain = SymbolState::new("BTCUSDT", BookSettings::new(5, 100));
        let mut state = plain;
        state.on_trades(&m, i64::MIN, 0, 10);
        let t = state.pending.front().expect("a trade").clone();
        assert!(!state.entry_fields(&t).iter().any(|(n, _)| n == "raw_json"));
        assert_eq!(state.keys.trades, "trades:{BTCUSDT}", "hash-tag by default");
    }

    /// A trades frame of BTCUSDT at time `time_us` with `(id, price, qty)` mantissas at
    /// `exponents`.
    fn trades_frame(time_us: i64, exponents: (i8, i8), trades: &[(i64, i64, i64)]) -> Vec<u8> {
        use crate::sbe::spot_stream::TradesStreamEventEncoder;
        let mut buf = vec![0u8; 1024];
        let length = {
            let mut e = TradesStreamEventEncoder::wrap(&mut buf).expect("room");
            e.event_time(time_us)
                .transact_time(time_us)
                .price_exponent(exponents.0)
                .qty_exponent(exponents.1);
            let count = u32::try_from(trades.len()).expect("a few");
            let mut group = e.trades(count).expect("a group");
            for &(id, price, qty) in trades {
                group
                    .next_entry()
                    .expect("an entry")
                    .id(id)
                    .price(price)
                    .qty(qty)
                    .is_buyer_maker(BoolEnum::False);
            }
            e.symbol(b"BTCUSDT").expect("a symbol");
            e.finish()
        };
        buf.truncate(length);
        buf
    }

    fn apply(state: &mut SymbolState, frame: &[u8]) {
        let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(frame) else {
            panic!("a trades frame");
        };
        state.on_trades(&m, i64::MIN, 0, 1_000);
    }

    fn field<'a>(fields: &'a [(&'static str, String)], name: &str) -> &'a str {
        fields
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Regression: a repaired trades frame (built at -8) set the symbol's exponents, so the
    /// windows summed mantissas of two exponents and the book and trades printed at the wrong
    /// scale. Each frame's mantissas are converted to the windows' exponents now.
    #[test]
    fn a_repaired_frame_at_other_exponents_is_converted_not_mixed() {
        let mut state = SymbolState::new("BTCUSDT", BookSettings::new(20, 5000));
        let t = 1_763_700_000_000_000;
        // Live at -2 / -3: 69769.91 x 0.002; repaired at -8 / -8: 69769.93 x 0.004.
        apply(&mut state, &trades_frame(t, (-2, -3), &[(1, 6_976_991, 2)]));
        apply(
            &mut state,
            &trades_frame(t + 10, (-8, -8), &[(2, 6_976_993_000_000, 400_000)]),
        );
        assert_eq!(state.exponents(), (-8, -8), "trades never set the book's");
        let [tr_1s, _, _] = state.stats_fields();
        assert_eq!(field(&tr_1s, "count"), "2");
        assert_eq!(field(&tr_1s, "volume"), "0.006");
        assert_eq!(field(&tr_1s, "high"), "69769.93");
        assert_eq!(field(&tr_1s, "low"), "69769.91");
        // (69769.91 x 2 + 69769.93 x 4) / 6 = 69769.9233.. rounded down at the price's decimals.
        assert_eq!(field(&tr_1s, "vwap"), "69769.92");
        let prices: Vec<String> = state.pending.iter().map(|p| p.price.to_string()).collect();
        assert_eq!(prices, ["69769.91", "69769.93"], "trades: at one scale");
        // A frame finer than the windows: they move to its exponents, exactly.
        apply(
            &mut state,
            &trades_frame(t + 20, (-8, -8), &[(3, 6_976_992_500_000, 100_000)]),
        );
        let [tr_1s, _, _] = state.stats_fields();
        assert_eq!(field(&tr_1s, "count"), "3");
        assert_eq!(field(&tr_1s, "volume"), "0.00700000");
        assert_eq!(field(&tr_1s, "low"), "69769.91000000");
        assert_eq!(field(&tr_1s, "last"), "69769.92500000");
        assert_eq!(state.inconvertible, 0);
    }

    /// Regression: `as_of_us` of `tr:` and `feat:` advanced while the symbol's trades were
    /// held back for a repair, claiming current windows that lacked trades.
    #[test]
    fn windows_missing_held_trades_are_not_claimed_complete() {
        let mut state = SymbolState::new("BTCUSDT", BookSettings::new(20, 5000));
        apply(
            &mut state,
            &trades_frame(1_000_000, (-2, -3), &[(1, 100, 1)]),
        );
        let [tr_1s, tr_5s, feat] = state.stats_fields();
        for fields in [&tr_1s, &tr_5s, &feat] {
            assert_eq!(field(fields, "trades_complete"), "1");
        }
        state.trades_held = true;
        let [tr_1s, tr_5s, feat] = state.stats_fields();
        for fields in [&tr_1s, &tr_5s, &feat] {
            assert_eq!(field(fields, "trades_complete"), "0", "{fields:?}");
        }
    }

    /// Regression: a trade whose mantissas the windows could not take (an overflow converting
    /// to their exponents) was skipped whole: counted, but never written to `trades:` and never
    /// dead-lettered. It still goes to `trades:` now, at its own exponents, and stays out of
    /// the windows.
    #[test]
    fn a_trade_the_windows_cannot_take_still_goes_to_the_trade_stream() {
        let mut state = SymbolState::new("BTCUSDT", BookSettings::new(20, 5000));
        let t = 1_763_700_000_000_000;
        apply(&mut state, &trades_frame(t, (-8, -8), &[(1, 100, 100)]));
        // 10^15 at -2: 10^23 at -8, past i64.
        let huge = 100_000_000_000_000_000;
        apply(
            &mut state,
            &trades_frame(t + 10, (-2, -8), &[(2, huge, 100)]),
        );
        assert_eq!(state.inconvertible, 1);
        let ids: Vec<i64> = state.pending.iter().map(|p| p.id).collect();
        assert_eq!(ids, [1, 2], "the trade is kept for `trades:`");
        assert_eq!(state.pending[1].price.to_string(), "1000000000000000.00");
        let [tr_1s, _, _] = state.stats_fields();
        assert_eq!(
            field(&tr_1s, "count"),
            "1",
            "never rounded into the windows"
        );
        apply(
            &mut state,
            &trades_frame(t + 20, (-8, -8), &[(2, 100, 100)]),
        );
        assert_eq!(state.pending.len(), 2, "its id counts as taken");
    }

    /// The commands of one write, as RESP text.
    fn written(state: &mut SymbolState) -> String {
        let mut pipe = redis::pipe();
        let mut sent = Vec::new();
        state.write(&mut pipe, (1_000, 1_000), 1_700_000_000_000_000, &mut sent);
        String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned()
    }

    /// Issue 11: a halted symbol's `bbo:`, `tr:` and `feat:` kept their last values unmarked.
    /// They are marked with the book's reason while it is stopped (again after a reconnect),
    /// and the mark comes off with its first frame back.
    #[test]
    fn a_stopped_symbol_marks_its_other_keys_until_it_is_back() {
        let mut state = SymbolState::new("BTCUSDT", BookSettings::new(20, 5000));
        apply(&mut state, &trades_frame(1_000, (-8, -8), &[(1, 100, 100)]));
        let live = written(&mut state);
        // No best bid/ask yet, so nothing of `bbo:`; no mark, nothing to take off.
        assert!(
            !live.contains("bbo:{BTCUSDT}") && !live.contains("HDEL"),
            "{live}"
        );
        state.stop("halted: trading stopped");
        assert!(state.dirty());
        let marked = written(&mut state);
        for key in [
            "bbo:{BTCUSDT}",
            "tr:{BTCUSDT}:1s",
            "tr:{BTCUSDT}:5s",
            "feat:{BTCUSDT}",
        ] {
            assert!(marked.contains(key), "{key} in {marked}");
        }
        assert_eq!(marked.matches("halted: trading stopped").count(), 4);
        assert!(!written(&mut state).contains("halted"), "written once");
        state.mark_all_dirty();
        assert_eq!(
            written(&mut state).matches("halted").count(),
            4,
            "after a reconnect"
        );
        apply(&mut state, &trades_frame(2_000, (-8, -8), &[(2, 100, 100)]));
        let back = written(&mut state);
        assert_eq!(back.matches("HDEL").count(), 4, "{back}");
        assert!(!back.contains("halted"), "{back}");
        assert!(!written(&mut state).contains("HDEL"), "taken off once");
    }

    #[test]
    fn kline_hashes_hold_the_last_closed_and_the_open_candle() {
        let mut state = SymbolState::new("BTCUSDT", BookSettings::new(20, 5000));
        let one_second = crate::kline::Interval::of("1s").expect("1s");
        state.set_klines(&KlinesConfig {
            intervals: vec![one_second],
            close_after_ms: 500,
        });
        // Second 1 is partial (the first seen): never published.
        apply(
            &mut state,
            &trades_frame(1_500_000, (-8, -8), &[(1, 100, 100)]),
        );
        let first = written(&mut state);
        assert!(
            !first.contains("\"closed\"") && !first.contains("[1000,"),
            "{first}"
        );
        apply(
            &mut state,
            &trades_frame(2_100_000, (-8, -8), &[(2, 200, 300)]),
        );
        apply(
            &mut state,
            &trades_frame(2_900_000, (-8, -8), &[(3, 150, 100)]),
        );
        apply(
            &mut state,
            &trades_frame(3_000_000, (-8, -8), &[(4, 120, 100)]),
        );
        let out = written(&mut state);
        assert!(out.contains("kl:{BTCUSDT}:1s"), "{out}");
        let closed =
            "[2000,\"0.00000200\",\"0.00000200\",\"0.00000150\",\"0.00000150\",\"0.00000400\",2999";
        assert!(out.contains(closed), "{out}");
        assert!(
            out.contains("[3000,\"0.00000120\""),
            "the open candle: {out}"
        );
        let count = |field: &str, n: u64| format!("{field}\r\n${}\r\n{n}\r\n", n.to_string().len());
        assert!(out.contains(&count("closed_missing", 0)), "{out}");
        assert!(out.contains(&count("open_missing", 0)), "{out}");
        assert!(!written(&mut state).contains("kl:"), "written once");
        // Ids 5 and 6 never come (given up): the open candle says so.
        apply(
            &mut state,
            &trades_frame(3_200_000, (-8, -8), &[(7, 130, 100)]),
        );
        let out = written(&mut state);
        assert!(out.contains(&count("open_missing", 2)), "{out}");
        // The symbol's clock passes the open candle's end: it closes.
        state.kline_clock(4_600, false);
        let out = written(&mut state);
        assert!(
            out.contains("[3000,") && out.contains("HDEL") && out.contains("open_missing"),
            "closed, none open: {out}"
        );
        assert!(out.contains(&count("closed_missing", 2)), "{out}");
        state.stop("removed: by request");
        let marked = written(&mut state);
        assert_eq!(marked.matches("removed: by request").count(), 5, "{marked}");
    }

    /// Review 14: a symbol removed while trades were held behind a gap: the sink gives the
    /// gap up and delivers them (`TradeOrders::forget`) just before the removal forgets the
    /// candles. The closed candle they mark must reach Redis marked: it was left as written
    /// before, whole.
    #[test]
    fn a_gap_released_at_a_removal_marks_the_closed_candle_in_redis() {
        let mut state = SymbolState::new("BTCUSDT", BookSettings::new(20, 5000));
        state.set_klines(&KlinesConfig {
            intervals: vec![crate::kline::Interval::of("1s").expect("1s")],
            close_after_ms: 500,
        });
        apply(&mut state, &trades_frame(1_500_000, (-8, -8), &[(1, 1, 1)]));
        apply(&mut state, &trades_frame(2_100_000, (-8, -8), &[(2, 2, 1)]));
        state.kline_clock(3_600, false);
        let out = written(&mut state);
        let count = |field: &str, n: u64| format!("{field}\r\n${}\r\n{n}\r\n", n.to_string().len());
        assert!(
            out.contains("[2000,") && out.contains(&count("closed_missing", 0)),
            "{out}"
        );
        // Ids 3..=5 given up at the removal; id 6 (second 3) delivered, then the removal.
        apply(&mut state, &trades_frame(3_200_000, (-8, -8), &[(6, 3, 1)]));
        state.stop("removed: by request");
        let out = written(&mut state);
        assert!(
            out.contains("[2000,") && out.contains(&count("closed_missing", 3)),
            "the closed candle marked: {out}"
        );
        assert!(
            !out.contains("[3000,"),
            "the open candle is not published: {out}"
        );
        // Added again: a new start (partial first candle), no candle of before.
        apply(
            &mut state,
            &trades_frame(9_100_000, (-8, -8), &[(20, 1, 1)]),
        );
        let out = written(&mut state);
        assert!(!out.contains("[2000,") && !out.contains("[9000,"), "{out}");
    }

    /// While the symbol's connection is lost, its clock closes no candle (trades sent
    /// meanwhile show as a gap only after the reconnect); a trade delivered after the
    /// reconnect (after the gap's repair) lets it close again.
    #[test]
    fn a_lost_connection_keeps_the_clock_from_closing_a_candle() {
        let mut state = SymbolState::new("BTCUSDT", BookSettings::new(20, 5000));
        state.set_klines(&KlinesConfig {
            intervals: vec![crate::kline::Interval::of("1s").expect("1s")],
            close_after_ms: 0,
        });
        apply(&mut state, &trades_frame(1_500_000, (-8, -8), &[(1, 1, 1)]));
        apply(&mut state, &trades_frame(2_100_000, (-8, -8), &[(2, 2, 1)]));
        let _ = written(&mut state);
        state.klines_connection(StreamChange::Disconnected);
        state.kline_clock(6_000, false);
        state.klines_connection(StreamChange::Reconnected);
        state.kline_clock(6_001, false);
        assert!(!written(&mut state).contains("[2000,"), "closed unknown");
        // The repaired trade of second 2 (delivered after the reconnect) joins its candle.
        apply(&mut state, &trades_frame(2_900_000, (-8, -8), &[(3, 3, 1)]));
        let out = written(&mut state);
        let whole =
            "[2000,\"0.00000002\",\"0.00000003\",\"0.00000002\",\"0.00000003\",\"0.00000002\"";
        assert!(
            out.contains("kl:{BTCUSDT}:1s") && out.contains(whole),
            "{out}"
        );
        // Trades are known again: the clock closes it, whole.
        state.kline_clock(6_000, false);
        let out = written(&mut state);
        assert!(out.contains("[5000,") && out.contains("HDEL"), "{out}");
    }

    /// Review of the sinks: a symbol halted while its re-anchor was in flight. The swap (which
    /// replaces `tr:` and `feat:` whole, built before the halt) can land after the stopped
    /// mark, so the mark is written again once the re-anchor ends, whatever its outcome.
    #[test]
    fn a_reanchor_ending_after_a_stop_marks_the_swapped_keys_again() {
        for swapped in [true, false] {
            let mut state = SymbolState::new("BTCUSDT", BookSettings::new(20, 5000));
            let t = 1_763_700_000_000_000;
            apply(&mut state, &trades_frame(t, (-2, -3), &[(1, 6_976_991, 2)]));
            let mut budget = DiffBudget::new(1 << 20);
            let diff = Diff {
                first: 99,
                last: 100,
                event_time_us: t,
                bids: Vec::new(),
                asks: Vec::new(),
            };
            assert_eq!(state.ob.on_diff(&diff, &mut budget), Wants::Snapshot);
            state.ob.fetching = true;
            let live = state
                .ob
                .on_snapshot(100, vec![(10, 1)], vec![(11, 1)], 5000, &mut budget);
            assert!(live.is_ok(), "{live:?}");
            let (attempt, _swap) = state.begin_reanchor(t).expect("a live book");
            state.stop("halted: test");
            assert_eq!(written(&mut state).matches("halted: test").count(), 4);
            // The swap lands (or may have: no answer) after the marks.
            state.end_reanchor(attempt, swapped, 0);
            let again = written(&mut state);
            for key in ["tr:{BTCUSDT}:1s", "tr:{BTCUSDT}:5s", "feat:{BTCUSDT}"] {
                assert!(
                    again.contains(key) && again.contains("halted: test"),
                    "swapped {swapped}: {key} marked again in {again}"
                );
            }
        }
    }

    /// A depth diff frame of BTCUSDT at `time_us`, `U = first`, `u = last`, at -8 / -8.
    fn diff_frame(
        time_us: i64,
        (first, last): (i64, i64),
        bids: &[(i64, i64)],
        asks: &[(i64, i64)],
    ) -> Vec<u8> {
        use crate::sbe::spot_stream::DepthDiffStreamEventEncoder;
        let mut buf = vec![0u8; 1024];
        let length = {
            let mut e = DepthDiffStreamEventEncoder::wrap(&mut buf).expect("room");
            e.event_time(time_us)
                .first_book_update_id(first)
                .last_book_update_id(last)
                .price_exponent(-8)
                .qty_exponent(-8);
            let count = |l: &[(i64, i64)]| u16::try_from(l.len()).expect("a few");
            let mut group = e.bids(count(bids)).expect("a group");
            for &(price, qty) in bids {
                group.next_entry().expect("an entry").price(price).qty(qty);
            }
            let mut group = e.asks(count(asks)).expect("a group");
            for &(price, qty) in asks {
                group.next_entry().expect("an entry").price(price).qty(qty);
            }
            e.symbol(b"BTCUSDT").expect("a symbol");
            e.finish()
        };
        buf.truncate(length);
        buf
    }

    fn apply_frame(state: &mut SymbolState, frame: &[u8], budget: &mut DiffBudget) -> Wants {
        let message = crate::sbe::decode(frame).expect("a frame");
        state.on_frame(&message, 0, 1_000, budget)
    }

    /// BTCUSDT with a published book (bids 10, 9; asks 11, 12; at update 100, time `t`), one
    /// trade at `t` in its windows, and everything written once.
    /// A gap at `t` (a diff jumping to 150) and the new snapshot that makes the book live
    /// again, its stale mark written: a re-anchor is due.
    fn resynced_at(state: &mut SymbolState, budget: &mut DiffBudget, t: i64) {
        apply_frame(state, &diff_frame(t, (150, 150), &[], &[]), budget);
        state.ob.fetching = true;
        let live = state
            .ob
            .on_snapshot(150, vec![(10, 1)], vec![(11, 1)], 5000, budget);
        assert!(live.is_ok(), "{live:?}");
        let _ = written(state);
    }

    fn published_state(t: i64) -> (SymbolState, DiffBudget) {
        let mut state = SymbolState::new("BTCUSDT", BookSettings::new(2, 5000));
        let mut budget = DiffBudget::new(1 << 20);
        let first = apply_frame(&mut state, &diff_frame(t, (99, 100), &[], &[]), &mut budget);
        assert_eq!(first, Wants::Snapshot);
        state.ob.fetching = true;
        let bids = vec![(10, 1), (9, 1)];
        let asks = vec![(11, 1), (12, 1)];
        let live = state.ob.on_snapshot(100, bids, asks, 5000, &mut budget);
        assert!(live.is_ok(), "{live:?}");
        let _ = written(&mut state);
        let (attempt, _swap) = state.begin_reanchor(t).expect("a live book");
        state.end_reanchor(attempt, true, 0);
        apply(&mut state, &trades_frame(t, (-8, -8), &[(1, 10, 1)]));
        let out = written(&mut state);
        assert!(
            out.contains("ob:{BTCUSDT}") && out.contains("tr:{BTCUSDT}:1s"),
            "{out}"
        );
        (state, budget)
    }

    /// The `HSET` of `key` in `out` (RESP text), if any: its text up to the next command.
    fn hset_of<'a>(out: &'a str, key: &str) -> Option<&'a str> {
        let at = out.find(&format!("\r\n{key}\r\n"))?;
        let rest = &out[at..];
        Some(rest.find("\r\n*").map_or(rest, |end| &rest[..end]))
    }

    /// Issue 11: `tr:` was written with every depth diff and best bid/ask (~37 times a second a
    /// symbol at the 20k preset). It is written only when its window's content changed: a trade
    /// entered it, a trade left it as the symbol's clock passed, or `trades_complete` flipped.
    #[test]
    fn the_trade_windows_are_written_only_when_their_content_changed() {
        let t = 1_763_700_000_000_000;
        let (mut state, mut budget) = published_state(t);
        // A depth diff alone: `ob:` and `feat:`, neither `tr:`.
        apply_frame(
            &mut state,
            &diff_frame(t + 100_000, (101, 101), &[(10, 2)], &[]),
            &mut budget,
        );
        let out = written(&mut state);
        assert!(hset_of(&out, "ob:{BTCUSDT}").is_some(), "{out}");
        assert!(hset_of(&out, "feat:{BTCUSDT}").is_some(), "{out}");
        assert!(!out.contains("tr:{BTCUSDT}"), "{out}");
        // A trade: both windows.
        apply(
            &mut state,
            &trades_frame(t + 200_000, (-8, -8), &[(2, 11, 1)]),
        );
        let out = written(&mut state);
        for key in ["tr:{BTCUSDT}:1s", "tr:{BTCUSDT}:5s", "feat:{BTCUSDT}"] {
            assert!(hset_of(&out, key).is_some(), "{key} in {out}");
        }
        let tr = hset_of(&out, "tr:{BTCUSDT}:1s").expect("tr:1s");
        assert!(
            tr.contains(&format!("as_of_us\r\n$16\r\n{}", t + 200_000)),
            "{tr}"
        );
        // The clock passes the first trade's second (a diff at t + 1.1 s): it leaves the 1 s
        // window, which is written, as of that time; the 5 s window keeps both.
        let later = t + 1_100_000;
        apply_frame(
            &mut state,
            &diff_frame(later, (102, 102), &[], &[]),
            &mut budget,
        );
        let out = written(&mut state);
        let tr = hset_of(&out, "tr:{BTCUSDT}:1s").expect("tr:1s written");
        assert!(tr.contains("count\r\n$1\r\n1\r\n"), "{tr}");
        assert!(tr.contains(&format!("as_of_us\r\n$16\r\n{later}")), "{tr}");
        assert!(hset_of(&out, "tr:{BTCUSDT}:5s").is_none(), "{out}");
        // Nothing changed: nothing of the windows goes (the book's diff writes `ob:`, `feat:`).
        apply_frame(
            &mut state,
            &diff_frame(later + 1, (103, 103), &[], &[(12, 3)]),
            &mut budget,
        );
        assert!(!written(&mut state).contains("tr:{BTCUSDT}"));
        // Trades held back for a repair: both windows say so, though no trade came.
        apply_frame(
            &mut state,
            &diff_frame(later + 2, (104, 104), &[], &[(12, 4)]),
            &mut budget,
        );
        state.trades_held = true;
        let out = written(&mut state);
        for key in ["tr:{BTCUSDT}:1s", "tr:{BTCUSDT}:5s"] {
            let tr = hset_of(&out, key).unwrap_or_else(|| panic!("{key} in {out}"));
            assert!(tr.contains("trades_complete\r\n$1\r\n0"), "{tr}");
        }
    }

    /// Review of trwin: `tr:` (written only when its window changed) and `feat:` (with every
    /// book change) never disagree about `trades_complete`: a flip either way writes both
    /// windows with the features, also when it happens while a re-anchor is in flight (the
    /// swap carries the flag it began with; the flip is written after it).
    #[test]
    fn tr_and_feat_agree_about_trades_complete_across_flips_and_reanchors() {
        let t = 1_763_700_000_000_000;
        let (mut state, mut budget) = published_state(t);
        let complete_in = |out: &str, flag: &str| {
            ["tr:{BTCUSDT}:1s", "tr:{BTCUSDT}:5s", "feat:{BTCUSDT}"]
                .iter()
                .all(|key| {
                    hset_of(out, key)
                        .is_some_and(|h| h.contains(&format!("trades_complete\r\n$1\r\n{flag}")))
                })
        };
        // A diff at `t + at` with update id `id`: the book changes, the windows do not.
        let diff = |state: &mut SymbolState, budget: &mut DiffBudget, at: i64, id: i64| {
            apply_frame(state, &diff_frame(t + at, (id, id), &[], &[]), budget);
        };
        for (at, held) in [(10, true), (20, false), (30, true), (40, false)] {
            diff(&mut state, &mut budget, at, 100 + at / 10);
            state.trades_held = held;
            let out = written(&mut state);
            let flag = if held { "0" } else { "1" };
            assert!(complete_in(&out, flag), "held {held}: {out}");
        }
        // A gap and a new snapshot: a re-anchor begins with the trades complete; they are
        // held while it is in flight.
        resynced_at(&mut state, &mut budget, t + 50);
        let (attempt, swap) = state.begin_reanchor(t + 60).expect("a live book");
        for fields in [&swap.tr_1s, &swap.tr_5s, &swap.feat] {
            assert_eq!(field(fields, "trades_complete"), "1");
        }
        diff(&mut state, &mut budget, 70, 151);
        state.trades_held = true;
        assert!(
            !written(&mut state).contains("tr:"),
            "the swap carries them"
        );
        state.end_reanchor(attempt, true, 0);
        diff(&mut state, &mut budget, 80, 152);
        let out = written(&mut state);
        assert!(complete_in(&out, "0"), "{out}");
    }

    /// After a reconnect (or a failed pipeline) everything known goes again: both windows,
    /// the features, the best bid/ask and both sides of the book.
    #[test]
    fn after_a_reconnect_every_key_and_both_sides_are_written_again() {
        let t = 1_763_700_000_000_000;
        let (mut state, mut budget) = published_state(t);
        // A change of the bid top only: the bids go, not the asks.
        apply_frame(
            &mut state,
            &diff_frame(t + 1, (101, 101), &[(10, 5)], &[]),
            &mut budget,
        );
        let out = written(&mut state);
        let ob = hset_of(&out, "ob:{BTCUSDT}").expect("ob:");
        assert!(
            ob.contains("\r\nbids\r\n") && !ob.contains("\r\nasks\r\n"),
            "{ob}"
        );
        // Nothing changed (the trade's `XADD` waits for its reply, so it goes again).
        let out = written(&mut state);
        for key in ["ob:{", "tr:{", "feat:{", "bbo:{"] {
            assert!(!out.contains(key), "{key} in {out}");
        }
        state.mark_all_dirty();
        let out = written(&mut state);
        let ob = hset_of(&out, "ob:{BTCUSDT}").expect("ob:");
        assert!(
            ob.contains("\r\nbids\r\n") && ob.contains("\r\nasks\r\n"),
            "{ob}"
        );
        for key in ["tr:{BTCUSDT}:1s", "tr:{BTCUSDT}:5s", "feat:{BTCUSDT}"] {
            assert!(hset_of(&out, key).is_some(), "{key} in {out}");
        }
        // The windows did not change: `as_of_us` is still the time of the trade.
        let tr = hset_of(&out, "tr:{BTCUSDT}:5s").expect("tr:5s");
        assert!(tr.contains(&format!("as_of_us\r\n$16\r\n{t}")), "{tr}");
    }

    /// The field names of the `HSET` of `key` in `out` (RESP text), in order; `None` when
    /// `key` is not written.
    fn hset_names(out: &str, key: &str) -> Option<Vec<String>> {
        let hset = hset_of(out, key)?;
        let hset = hset.strip_suffix("\r\n").unwrap_or(hset);
        let parts: Vec<&str> = hset
            .split("\r\n")
            .filter(|p| !p.starts_with('$'))
            .skip(2)
            .collect();
        Some(parts.iter().step_by(2).map(|n| (*n).to_string()).collect())
    }

    /// Issue 11: `tr:`, `feat:` and `bbo:` carry only the fields whose text changed since the
    /// last write, and every field again after a reconnect or a failed pipeline
    /// ([`SymbolState::mark_all_dirty`]) and after a re-anchor's swap.
    #[test]
    fn the_hashes_carry_only_the_fields_that_changed_until_redis_may_hold_something_else() {
        let t = 1_763_700_000_000_000;
        let (mut state, mut budget) = published_state(t);
        // A second buy at a higher price: the counts, the volumes bought, vwap, high, last and
        // the time move; `sell_volume`, `low` and `trades_complete` do not. The features'
        // flow imbalances stay 1 (all buys), the book is as it was: only their time moves.
        apply(&mut state, &trades_frame(t + 200, (-8, -8), &[(2, 12, 1)]));
        let out = written(&mut state);
        let tr = hset_names(&out, "tr:{BTCUSDT}:1s").expect("tr:1s");
        assert_eq!(
            tr,
            [
                "count",
                "volume",
                "buy_volume",
                "vwap",
                "high",
                "last",
                "as_of_us"
            ]
        );
        assert_eq!(
            hset_names(&out, "feat:{BTCUSDT}").expect("feat:"),
            ["as_of_us"]
        );
        // The best bid's quantity: `ob:` carries the bids and its moving fields, `feat:` the
        // imbalance, the microprice, the book's update id and the time.
        apply_frame(
            &mut state,
            &diff_frame(t + 300, (101, 101), &[(10, 3)], &[]),
            &mut budget,
        );
        let out = written(&mut state);
        assert_eq!(
            hset_names(&out, "ob:{BTCUSDT}").expect("ob:"),
            // `written_at_us` too, but every test write is at one time.
            ["update_id", "bids", "event_time_us"]
        );
        assert_eq!(
            hset_names(&out, "feat:{BTCUSDT}").expect("feat:"),
            ["microprice", "imbalance", "book_update_id", "as_of_us"]
        );
        // The best bid/ask: whole at first, then only what moved.
        let bbo = |bid_qty, update_id| Bbo {
            bid: 10,
            bid_qty,
            ask: 11,
            ask_qty: 1,
            update_id,
            event_time_us: t + 300,
        };
        state.bbo = Some(bbo(3, 101));
        state.bbo_dirty = true;
        let out = written(&mut state);
        assert_eq!(hset_names(&out, "bbo:{BTCUSDT}").expect("bbo:"), BBO_FIELDS);
        state.bbo = Some(bbo(4, 102));
        state.bbo_dirty = true;
        let out = written(&mut state);
        assert_eq!(
            hset_names(&out, "bbo:{BTCUSDT}").expect("bbo:"),
            ["bid_qty", "update_id"]
        );
        // A reconnect (Redis may have restarted) or a failed pipeline: every field of every
        // key, unchanged as they are.
        state.mark_all_dirty();
        let out = written(&mut state);
        for (key, fields) in [
            ("bbo:{BTCUSDT}", BBO_FIELDS),
            ("tr:{BTCUSDT}:1s", TR_FIELDS),
            ("tr:{BTCUSDT}:5s", TR_FIELDS),
            ("feat:{BTCUSDT}", FEAT_FIELDS),
        ] {
            assert_eq!(hset_names(&out, key).unwrap_or_default(), fields, "{key}");
        }
        assert_eq!(hset_names(&out, "ob:{BTCUSDT}").map(|n| n.len()), Some(13));
        // A gap, a new snapshot and its swap: the swap replaced `ob:`, `tr:` and `feat:`,
        // whose next writes go whole.
        resynced_at(&mut state, &mut budget, t + 400);
        let (attempt, _swap) = state.begin_reanchor(t + 500).expect("a live book");
        state.end_reanchor(attempt, true, 0);
        apply(&mut state, &trades_frame(t + 600, (-8, -8), &[(3, 12, 1)]));
        let out = written(&mut state);
        assert_eq!(hset_names(&out, "ob:{BTCUSDT}").map(|n| n.len()), Some(13));
        for (key, fields) in [
            ("tr:{BTCUSDT}:1s", TR_FIELDS),
            ("tr:{BTCUSDT}:5s", TR_FIELDS),
            ("feat:{BTCUSDT}", FEAT_FIELDS),
        ] {
            assert_eq!(hset_names(&out, key).unwrap_or_default(), fields, "{key}");
        }
        // And then only what moves again.
        apply(&mut state, &trades_frame(t + 700, (-8, -8), &[(4, 12, 1)]));
        let out = written(&mut state);
        assert_eq!(
            hset_names(&out, "tr:{BTCUSDT}:1s").expect("tr:1s"),
            ["count", "volume", "buy_volume", "as_of_us"]
        );
    }

    /// A published book at `t` (as [`published_state`]) after a gap at `t + 1` and a new
    /// snapshot at update id 150: live again, its re-anchor due, everything before written.
    fn resynced_state(t: i64) -> (SymbolState, DiffBudget) {
        let (mut state, mut budget) = published_state(t);
        apply_frame(
            &mut state,
            &diff_frame(t + 1, (150, 150), &[], &[]),
            &mut budget,
        );
        state.ob.fetching = true;
        let live = state
            .ob
            .on_snapshot(150, vec![(10, 1)], vec![(11, 1)], 5000, &mut budget);
        assert!(live.is_ok(), "{live:?}");
        let _ = written(&mut state);
        (state, budget)
    }

    /// A re-anchor's swap still carries the windows and the features (the writes wait for it),
    /// and a swap that failed has them written again, as they are now.
    #[test]
    fn a_reanchor_carries_the_windows_and_a_failed_one_writes_them_again() {
        let t = 1_763_700_000_000_000;
        let (mut state, _budget) = resynced_state(t);
        apply(&mut state, &trades_frame(t + 2, (-8, -8), &[(2, 10, 1)]));
        let (attempt, swap) = state.begin_reanchor(t + 2).expect("a live book");
        assert_eq!(field(&swap.tr_1s, "count"), "2");
        assert_eq!(field(&swap.tr_5s, "count"), "2");
        assert_eq!(field(&swap.tr_1s, "as_of_us"), (t + 2).to_string());
        assert_eq!(field(&swap.feat, "book_update_id"), "150");
        assert!(
            !written(&mut state).contains("tr:"),
            "the swap carries them"
        );
        state.end_reanchor(attempt, false, 0);
        let out = written(&mut state);
        for key in ["tr:{BTCUSDT}:1s", "tr:{BTCUSDT}:5s", "feat:{BTCUSDT}"] {
            assert!(hset_of(&out, key).is_some(), "{key} in {out}");
        }
    }

    /// Review of trwin: a re-anchor overtaken by a resync (a depth gap while its swap was in
    /// flight) is no longer the book's current one, so the writes of `tr:` and `feat:` resume
    /// at once. A newer window written then can land before the old swap, which replaces it
    /// with the window the swap was built from; `tr:` is written only when its window changes
    /// again, so Redis kept the older window while the writer believed it current. Whatever
    /// such a swap did, the windows and the features are written again when it ends.
    #[test]
    fn an_overtaken_reanchor_landing_late_has_the_newer_windows_written_again() {
        let t = 1_763_700_000_000_000;
        for swapped in [true, false] {
            // A gap, a new snapshot: a re-anchor starts, with the windows holding one trade.
            let (mut state, mut budget) = resynced_state(t);
            let (attempt, swap) = state.begin_reanchor(t + 2).expect("a live book");
            assert_eq!(field(&swap.tr_1s, "count"), "1");
            // Another gap while the swap is in flight: the book syncs again, and a trade
            // enters the windows; they are written (the re-anchor no longer holds them back).
            apply_frame(
                &mut state,
                &diff_frame(t + 3, (160, 160), &[], &[]),
                &mut budget,
            );
            apply(&mut state, &trades_frame(t + 4, (-8, -8), &[(2, 10, 1)]));
            let out = written(&mut state);
            let tr = hset_of(&out, "tr:{BTCUSDT}:1s").expect("the newer window written");
            assert!(tr.contains("count\r\n$1\r\n2\r\n"), "{tr}");
            // The old swap ends (it may have landed after that write, with count 1).
            state.end_reanchor(attempt, swapped, 0);
            let out = written(&mut state);
            for key in ["tr:{BTCUSDT}:1s", "tr:{BTCUSDT}:5s", "feat:{BTCUSDT}"] {
                let hset = hset_of(&out, key);
                assert!(hset.is_some(), "swapped {swapped}: {key} in {out}");
            }
            let tr = hset_of(&out, "tr:{BTCUSDT}:1s").unwrap_or_default();
            assert!(tr.contains("count\r\n$1\r\n2\r\n"), "{tr}");
        }
    }

    #[test]
    fn rescaling_is_exact_or_refused() {
        assert_eq!(rescale(6_976_991, -2, -8), Some(6_976_991_000_000));
        assert_eq!(rescale(6_976_991_000_000, -8, -2), Some(6_976_991));
        assert_eq!(rescale(6_976_991_500_000, -8, -2), None, "not exact");
        assert_eq!(rescale(i64::MAX, -2, -8), None, "overflow");
        assert_eq!(rescale(1, 127, -128), None, "hostile exponents");
    }

    #[test]
    fn iso_timestamps() {
        assert_eq!(iso8601_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            iso8601_us(1_731_605_400_123_456),
            "2024-11-14T17:30:00.123456Z"
        );
        assert_eq!(
            iso8601_us(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(iso8601_us(-1), "1969-12-31T23:59:59.999999Z");
    }
}
