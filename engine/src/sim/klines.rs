//! The simulator's kline streams (`<symbol>@kline_<interval>`, JSON connections only, as
//! Binance's SBE streams have none): each subscription builds its candles from the trades
//! the exchange publishes (every one, before the connection's faults, so the candles agree
//! with the journal and with `GET /api/v3/klines`) with [`crate::kline::Series`], and sends
//! Binance's kline event: the open candle at most once a second of exchange time while it
//! changes (`x` false), and each candle as it closes (`x` true), when the exchange's clock
//! (the time of any event it publishes) passes its end. Unlike Binance, a subscription's
//! first candle (partial: it opened before the subscription) is never sent.

use crate::kline::{Candle, Interval, SymbolKlines};
use crate::sbe::spot_stream::Message;

use super::server::{Published, Shared};

/// Exchange time between two updates of an open candle, ms (Binance: 1000 for `1s`, 2000
/// otherwise; the simulator sends one a second whatever the interval).
const UPDATE_EVERY_MS: i64 = 1_000;

/// The symbol index and interval a kline stream name designates (`btcusdt@kline_1m`).
pub fn kline_stream(name: &str, shared: &Shared) -> Option<(usize, Interval)> {
    let (symbol, suffix) = name.split_once('@')?;
    if symbol.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let interval = Interval::of(suffix.strip_prefix("kline_")?)?;
    Some((shared.symbol_index(symbol)?, interval))
}

/// One kline subscription.
struct Sub {
    name: String,
    symbol: usize,
    candles: SymbolKlines,
    /// Exchange time of the last open-candle update sent, ms.
    updated_ms: i64,
    /// The open candle changed since that update.
    changed: bool,
    /// The exchange clock of the symbol: the time of its latest event, ms (per symbol: the
    /// exchange publishes one symbol's events in time order, not all symbols' together).
    clock_ms: i64,
}

/// A connection's kline subscriptions.
#[derive(Default)]
pub struct KlineSubs {
    subs: Vec<Sub>,
    closed: Vec<(usize, Candle)>,
}

impl KlineSubs {
    /// Subscribes `name` (no-op when subscribed already).
    pub fn add(&mut self, name: String, symbol: usize, interval: Interval) {
        if self.subs.iter().any(|s| s.name == name) {
            return;
        }
        self.subs.push(Sub {
            name,
            symbol,
            candles: SymbolKlines::new(&[interval]),
            updated_ms: i64::MIN,
            changed: false,
            clock_ms: i64::MIN,
        });
    }

    /// Unsubscribes `name`.
    pub fn remove(&mut self, name: &str) {
        self.subs.retain(|s| s.name != name);
    }

    /// The subscribed names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.subs.iter().map(|s| s.name.as_str())
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Takes one published event; calls `send(stream name, kline event JSON)` for each
    /// kline message it makes due.
    pub fn on_event(
        &mut self,
        published: &Published,
        shared: &Shared,
        mut send: impl FnMut(&str, &str),
    ) {
        if self.subs.is_empty() {
            return;
        }
        let Ok(message) = crate::sbe::decode(&published.sbe) else {
            return;
        };
        let time_ms = match &message {
            Message::TradesStreamEvent(m) => m.transact_time(),
            Message::BestBidAskStreamEvent(m) => m.event_time(),
            Message::DepthDiffStreamEvent(m) => m.event_time(),
            Message::DepthSnapshotStreamEvent(m) => m.event_time(),
        }
        .div_euclid(1000);
        let mut closed = std::mem::take(&mut self.closed);
        for sub in self
            .subs
            .iter_mut()
            .filter(|s| s.symbol == published.key.symbol)
        {
            sub.clock_ms = sub.clock_ms.max(time_ms);
            let clock = sub.clock_ms;
            let symbol = shared.symbols.get(sub.symbol).map_or("", String::as_str);
            let interval = sub.candles.series.first().map_or("", |s| s.interval.name);
            if let Message::TradesStreamEvent(m) = &message {
                sub.candles.on_trades(m, i64::MIN, &mut closed);
                sub.changed = true;
            }
            sub.candles.advance(clock, 0, false, &mut closed);
            for (_, candle) in closed.drain(..) {
                send(
                    &sub.name,
                    &candle.stream_json(symbol, interval, true, clock),
                );
            }
            let open = sub.candles.series.first().and_then(|s| s.open());
            if let Some(open) = open
                && sub.changed
                && clock.saturating_sub(sub.updated_ms) >= UPDATE_EVERY_MS
            {
                send(&sub.name, &open.stream_json(symbol, interval, false, clock));
                (sub.updated_ms, sub.changed) = (clock, false);
            }
        }
        self.closed = closed;
    }
}
