//! The simulated exchange: one [`Market`] per symbol, an order-flow rate, and the publication
//! schedule of Binance's four SBE streams. Pure: [`Exchange::advance`] takes the time and
//! returns the events due, so the network shell decides only where they go.
//!
//! Publication, per symbol (SBE-MD):
//! - `<symbol>@trade`: one `TradesStreamEvent` per matching event that filled, at once;
//! - `<symbol>@bestBidAsk`: one `BestBidAskStreamEvent` whenever the top of book changes;
//! - `<symbol>@depth`: one `DepthDiffStreamEvent` per depth interval (20 ms) that saw changes,
//!   `U`/`u` spanning exactly the update ids of those changes;
//! - `<symbol>@depth20`: one `DepthSnapshotStreamEvent` (top 20 levels) per snapshot interval
//!   (50 ms).

use super::book::Side;
use super::market::{Diff, DiffBuilder, Market, SymbolSpec, Trade};

pub use crate::stream::StreamKind;

/// One stream of one symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// Index into [`Exchange::symbols`].
    pub symbol: usize,
    /// Which stream.
    pub kind: StreamKind,
}

/// What an event carries, in mantissas at the market's exponents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Trades filled by one matching event.
    Trades {
        /// Matching time, microseconds.
        transact_time_us: i64,
        /// The trades, consecutive ids.
        trades: Vec<Trade>,
    },
    /// The top of book.
    BestBidAsk {
        /// The book update id it reflects.
        update_id: i64,
        /// Best bid (price, quantity).
        bid: (i64, i64),
        /// Best ask (price, quantity).
        ask: (i64, i64),
    },
    /// Changed levels over one depth interval.
    DepthDiff(Diff),
    /// The top levels.
    Depth20 {
        /// The book update id it reflects.
        update_id: i64,
        /// Bids, highest first.
        bids: Vec<(i64, i64)>,
        /// Asks, lowest first.
        asks: Vec<(i64, i64)>,
    },
}

/// One event due on one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The stream.
    pub key: StreamKey,
    /// Event time, microseconds.
    pub event_time_us: i64,
    /// Contents.
    pub payload: Payload,
}

/// How the exchange runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeConfig {
    /// Upper-case symbols.
    pub symbols: Vec<String>,
    /// Seed of every market.
    pub seed: u64,
    /// Order-flow actions per second per symbol (Binance's busiest symbols see a few thousand
    /// book changes per second; raise it far beyond for load tests).
    pub actions_per_second: f64,
    /// Depth diff interval, microseconds (Binance: 20 ms).
    pub depth_interval_us: i64,
    /// Depth snapshot interval, microseconds (Binance: 50 ms).
    pub snapshot_interval_us: i64,
    /// Levels per side of a depth snapshot (Binance: 20).
    pub snapshot_levels: usize,
    /// Trades and book changes kept per symbol for ground truth and REST.
    pub journal_max: usize,
    /// The market runs this long, seconds, before the server opens ([`Exchange::run_history`]),
    /// so REST has history from the start (klines and trades to backfill); 0: none.
    pub history_s: u64,
}

/// The step of [`Exchange::run_history`]: trades of the history share a time per 10 ms.
pub const HISTORY_STEP_US: i64 = 10_000;

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            symbols: vec!["BTCUSDT".to_string()],
            seed: 1,
            actions_per_second: 2_000.0,
            depth_interval_us: 20_000,
            snapshot_interval_us: 50_000,
            snapshot_levels: 20,
            journal_max: 1_000_000,
            history_s: 0,
        }
    }
}

/// Per-symbol publication state.
#[derive(Clone, Debug)]
struct Publisher {
    diff: DiffBuilder,
    top: Option<((i64, i64), (i64, i64))>,
}

/// What the REST API reports of a symbol beyond its market: its exchangeInfo status and,
/// when set, the 24 h quote volume of its ticker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// `TRADING` unless the admin API set another status.
    pub status: String,
    /// The ticker's `quoteVolume` instead of the one the trades give, when set.
    pub quote_volume: Option<String>,
}

impl Default for Listing {
    fn default() -> Self {
        Listing {
            status: "TRADING".into(),
            quote_volume: None,
        }
    }
}

/// The simulated exchange.
#[derive(Clone, Debug)]
pub struct Exchange {
    config: ExchangeConfig,
    markets: Vec<Market>,
    /// Per symbol, what exchangeInfo and ticker/24hr report beyond the market itself (the
    /// admin API changes it: pair discovery's tests).
    listings: Vec<Listing>,
    publishers: Vec<Publisher>,
    /// Time of the last `advance`; `None` before the first.
    now_us: Option<i64>,
    next_depth_us: i64,
    next_snapshot_us: i64,
    /// Fractional actions carried to the next `advance`.
    action_debt: f64,
}

impl Exchange {
    /// An exchange whose markets are all determined by `config.seed`.
    pub fn new(config: ExchangeConfig) -> Exchange {
        let markets: Vec<Market> = config
            .symbols
            .iter()
            .map(|s| Market::new(SymbolSpec::for_symbol(s), config.seed, config.journal_max))
            .collect();
        let publishers = markets
            .iter()
            .map(|m| Publisher {
                diff: DiffBuilder::default(),
                top: top_of(m),
            })
            .collect();
        Exchange {
            listings: vec![Listing::default(); config.symbols.len()],
            config,
            markets,
            publishers,
            now_us: None,
            next_depth_us: 0,
            next_snapshot_us: 0,
            action_debt: 0.0,
        }
    }

    /// Runs the market through `history_s` seconds of history ending at `now_us`, in steps of
    /// [`HISTORY_STEP_US`], its events dropped (no one was connected): the journal and REST
    /// hold them; the streams start at `now_us`.
    pub fn run_history(&mut self, now_us: i64) {
        let history_us = i64::try_from(self.config.history_s)
            .unwrap_or(i64::MAX / 2_000_000)
            .saturating_mul(1_000_000);
        if history_us == 0 {
            return;
        }
        let mut events = Vec::new();
        let mut at = now_us.saturating_sub(history_us);
        while at < now_us {
            self.advance(at, &mut events);
            events.clear();
            at += HISTORY_STEP_US;
        }
        self.advance(now_us, &mut events);
    }

    /// The configuration.
    pub fn config(&self) -> &ExchangeConfig {
        &self.config
    }

    /// Upper-case symbols, in index order.
    pub fn symbols(&self) -> &[String] {
        &self.config.symbols
    }

    /// The index of an upper-case symbol.
    pub fn symbol_index(&self, symbol: &str) -> Option<usize> {
        self.config.symbols.iter().position(|s| s == symbol)
    }

    /// The market of symbol `index`.
    pub fn market(&self, index: usize) -> &Market {
        &self.markets[index]
    }

    /// What exchangeInfo and ticker/24hr report of `symbol` beyond its market.
    pub fn listing(&self, symbol: &str) -> Listing {
        self.symbol_index(symbol)
            .and_then(|i| self.listings.get(i))
            .cloned()
            .unwrap_or_default()
    }

    /// Sets `symbol`'s trading status (`TRADING`, `HALT`, `BREAK`, ...) and, when given, the
    /// 24 h quote volume its ticker reports (a decimal string; `None` keeps the current one).
    /// The market itself goes on: only what REST reports changes.
    pub fn set_listing(
        &mut self,
        symbol: &str,
        status: Option<&str>,
        quote_volume: Option<&str>,
    ) -> Result<Listing, String> {
        let index = self
            .symbol_index(symbol)
            .ok_or_else(|| format!("unknown symbol {symbol:?}"))?;
        if let Some(volume) = quote_volume
            && !volume
                .parse::<f64>()
                .is_ok_and(|v| v.is_finite() && v >= 0.0)
        {
            return Err(format!("quoteVolume {volume:?}: not a decimal number"));
        }
        let listing = &mut self.listings[index];
        if let Some(status) = status {
            if status.is_empty() || !status.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                return Err(format!(
                    "status {status:?}: expected TRADING, HALT, BREAK, ..."
                ));
            }
            listing.status = status.to_string();
        }
        if let Some(volume) = quote_volume {
            listing.quote_volume = Some(volume.to_string());
        }
        Ok(listing.clone())
    }

    /// Sets the order-flow rate from now on.
    pub fn set_rate(&mut self, actions_per_second: f64) {
        self.config.actions_per_second = actions_per_second.max(0.0);
    }

    /// Runs the order flow up to `now_us` and appends every event due, in publication order.
    pub fn advance(&mut self, now_us: i64, out: &mut Vec<Event>) {
        let Some(before) = self.now_us.replace(now_us) else {
            self.next_depth_us = now_us + self.config.depth_interval_us;
            self.next_snapshot_us = now_us + self.config.snapshot_interval_us;
            return;
        };
        let elapsed_us = (now_us - before).max(0) as f64;
        let due = self.action_debt + self.config.actions_per_second * elapsed_us / 1e6;
        let actions = due.floor() as u64;
        self.action_debt = due - actions as f64;
        for _ in 0..actions {
            for symbol in 0..self.markets.len() {
                self.step(symbol, now_us, out);
            }
        }
        if now_us >= self.next_depth_us {
            self.next_depth_us =
                next_boundary(self.next_depth_us, now_us, self.config.depth_interval_us);
            for symbol in 0..self.markets.len() {
                if let Some(diff) = self.publishers[symbol].diff.take() {
                    out.push(Event {
                        key: StreamKey {
                            symbol,
                            kind: StreamKind::Depth,
                        },
                        event_time_us: now_us,
                        payload: Payload::DepthDiff(diff),
                    });
                }
            }
        }
        if now_us >= self.next_snapshot_us {
            self.next_snapshot_us = next_boundary(
                self.next_snapshot_us,
                now_us,
                self.config.snapshot_interval_us,
            );
            for symbol in 0..self.markets.len() {
                let m = &self.markets[symbol];
                let levels = self.config.snapshot_levels;
                out.push(Event {
                    key: StreamKey {
                        symbol,
                        kind: StreamKind::Depth20,
                    },
                    event_time_us: now_us,
                    payload: Payload::Depth20 {
                        update_id: m.update_id(),
                        bids: m.book().levels(Side::Bid, levels),
                        asks: m.book().levels(Side::Ask, levels),
                    },
                });
            }
        }
    }

    fn step(&mut self, symbol: usize, now_us: i64, out: &mut Vec<Event>) {
        let market = &mut self.markets[symbol];
        let step = market.step(now_us);
        let publisher = &mut self.publishers[symbol];
        publisher.diff.add(&step.changes);
        if !step.trades.is_empty() {
            out.push(Event {
                key: StreamKey {
                    symbol,
                    kind: StreamKind::Trade,
                },
                event_time_us: now_us,
                payload: Payload::Trades {
                    transact_time_us: now_us,
                    trades: step.trades,
                },
            });
        }
        let top = top_of(market);
        if top != publisher.top {
            publisher.top = top;
            if let Some((bid, ask)) = top {
                out.push(Event {
                    key: StreamKey {
                        symbol,
                        kind: StreamKind::BestBidAsk,
                    },
                    event_time_us: now_us,
                    payload: Payload::BestBidAsk {
                        update_id: market.update_id(),
                        bid,
                        ask,
                    },
                });
            }
        }
    }
}

fn top_of(market: &Market) -> Option<((i64, i64), (i64, i64))> {
    Some((
        market.book().best(Side::Bid)?,
        market.book().best(Side::Ask)?,
    ))
}

/// The first multiple of `interval` after `boundary` that is also after `now`.
fn next_boundary(boundary: i64, now: i64, interval: i64) -> i64 {
    let interval = interval.max(1);
    let missed = (now - boundary) / interval + 1;
    boundary + missed * interval
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(rate: f64) -> Exchange {
        Exchange::new(ExchangeConfig {
            symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            actions_per_second: rate,
            ..ExchangeConfig::default()
        })
    }

    fn run(ex: &mut Exchange, millis: i64) -> Vec<Event> {
        let mut out = Vec::new();
        for ms in 0..=millis {
            ex.advance(1_700_000_000_000_000 + ms * 1000, &mut out);
        }
        out
    }

    #[test]
    fn streams_follow_the_publication_schedule() {
        let mut ex = exchange(5_000.0);
        let events = run(&mut ex, 1000);
        let count = |symbol, kind| {
            events
                .iter()
                .filter(|e| e.key == StreamKey { symbol, kind })
                .count()
        };
        for symbol in 0..2 {
            assert_eq!(
                count(symbol, StreamKind::Depth20),
                20,
                "every 50 ms for 1 s"
            );
            assert!(
                (45..=50).contains(&count(symbol, StreamKind::Depth)),
                "every 20 ms with changes"
            );
            assert!(count(symbol, StreamKind::Trade) > 100);
            assert!(count(symbol, StreamKind::BestBidAsk) > 100);
        }
    }

    #[test]
    fn diffs_are_contiguous_and_trades_consecutive_per_symbol() {
        let mut ex = exchange(3_000.0);
        let events = run(&mut ex, 2000);
        let mut last_u: [Option<i64>; 2] = [None, None];
        let mut next_trade: [Option<i64>; 2] = [None, None];
        for e in &events {
            match &e.payload {
                Payload::DepthDiff(d) => {
                    if let Some(u) = last_u[e.key.symbol] {
                        assert_eq!(d.first_update_id, u + 1);
                    }
                    last_u[e.key.symbol] = Some(d.last_update_id);
                }
                Payload::Trades { trades, .. } => {
                    for t in trades {
                        if let Some(id) = next_trade[e.key.symbol] {
                            assert_eq!(t.id, id);
                        }
                        next_trade[e.key.symbol] = Some(t.id + 1);
                    }
                }
                _ => {}
            }
        }
        assert!(last_u.iter().all(Option::is_some) && next_trade.iter().all(Option::is_some));
    }

    #[test]
    fn the_rate_knob_scales_the_flow() {
        let calm = run(&mut exchange(100.0), 1000).len();
        let busy = run(&mut exchange(20_000.0), 1000).len();
        assert!(busy > 20 * calm, "calm {calm}, busy {busy}");
    }

    #[test]
    fn stream_names_round_trip() {
        for kind in StreamKind::ALL {
            assert_eq!(StreamKind::from_suffix(kind.suffix()), Some(kind));
        }
        assert_eq!(StreamKind::from_suffix("aggTrade"), None);
    }
}
