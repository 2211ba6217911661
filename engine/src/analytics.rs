//! Rolling trade statistics and book features, the values the Redis writer keeps per symbol
//! (`tr:...:1s`, `tr:...:5s`, `feat:`). Pure: trades and book levels in, numbers out; exact
//! integer sums of mantissas, `f64` only for ratios.
//!
//! All prices and quantities are mantissas at one exponent per symbol (Binance: -8 and -8);
//! sums of `price x qty` are kept in `i128`, so no overflow for any realistic window.

use std::collections::VecDeque;

/// One trade as the statistics see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TradeTick {
    /// Trade time, microseconds.
    pub time_us: i64,
    /// Price mantissa.
    pub price: i64,
    /// Quantity mantissa.
    pub qty: i64,
    /// Whether the buyer was the maker (the taker sold).
    pub buyer_maker: bool,
}

/// Statistics of the trades in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// Trades.
    pub count: u64,
    /// Sum of quantities (mantissas).
    pub volume: i128,
    /// Quantity bought by takers.
    pub buy_volume: i128,
    /// Quantity sold by takers.
    pub sell_volume: i128,
    /// Sum of price x quantity (mantissa x mantissa).
    pub notional: i128,
    /// Highest price, if any trade.
    pub high: Option<i64>,
    /// Lowest price, if any trade.
    pub low: Option<i64>,
    /// Last price, if any trade.
    pub last: Option<i64>,
}

impl WindowStats {
    /// Volume-weighted average price as a price mantissa (rounded down), if any volume.
    pub fn vwap(&self) -> Option<i64> {
        (self.volume > 0).then(|| (self.notional / self.volume) as i64)
    }

    /// Taker buy volume minus sell volume, over total volume: from -1 (all sells) to 1.
    pub fn flow_imbalance(&self) -> Option<f64> {
        (self.volume > 0).then(|| (self.buy_volume - self.sell_volume) as f64 / self.volume as f64)
    }
}

/// A rolling window of trades over the last `span_us` microseconds.
#[derive(Clone, Debug)]
pub struct TradeWindow {
    span_us: i64,
    trades: VecDeque<TradeTick>,
    sums: WindowStats,
}

impl TradeWindow {
    /// A window spanning `span_us` microseconds (1 s and 5 s in the Redis writer).
    pub fn new(span_us: i64) -> Self {
        TradeWindow {
            span_us: span_us.max(1),
            trades: VecDeque::new(),
            sums: WindowStats::default(),
        }
    }

    /// Adds a trade (trades arrive in time order per symbol).
    pub fn push(&mut self, trade: TradeTick) {
        let qty = i128::from(trade.qty);
        self.sums.count += 1;
        self.sums.volume += qty;
        if trade.buyer_maker {
            self.sums.sell_volume += qty;
        } else {
            self.sums.buy_volume += qty;
        }
        self.sums.notional += i128::from(trade.price) * qty;
        self.trades.push_back(trade);
    }

    /// Drops trades older than the window at `now_us` and returns the statistics. High and low
    /// are recomputed from what remains (the window is short, so this stays cheap).
    pub fn stats(&mut self, now_us: i64) -> WindowStats {
        let horizon = now_us.saturating_sub(self.span_us);
        while let Some(old) = self
            .trades
            .front()
            .copied()
            .filter(|t| t.time_us <= horizon)
        {
            let qty = i128::from(old.qty);
            self.sums.count -= 1;
            self.sums.volume -= qty;
            if old.buyer_maker {
                self.sums.sell_volume -= qty;
            } else {
                self.sums.buy_volume -= qty;
            }
            self.sums.notional -= i128::from(old.price) * qty;
            self.trades.pop_front();
        }
        let mut stats = self.sums;
        stats.high = self.trades.iter().map(|t| t.price).max();
        stats.low = self.trades.iter().map(|t| t.price).min();
        stats.last = self.trades.back().map(|t| t.price);
        stats
    }
}

/// Book features from the top of book and the top levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Features {
    /// (bid + ask) / 2, in price mantissa units.
    pub mid: f64,
    /// (ask - bid) / mid, in basis points.
    pub spread_bps: f64,
    /// Size-weighted mid: (bid x askQty + ask x bidQty) / (bidQty + askQty).
    pub microprice: f64,
    /// (bid volume - ask volume) / (bid volume + ask volume) over the top levels given.
    pub imbalance: f64,
}

/// Features of a book whose best levels are `bids[0]` and `asks[0]` (price, qty mantissas),
/// or `None` for an empty or crossed side.
pub fn features(bids: &[(i64, i64)], asks: &[(i64, i64)]) -> Option<Features> {
    let (&(bid, bid_qty), &(ask, ask_qty)) = (bids.first()?, asks.first()?);
    if bid <= 0 || ask <= bid {
        return None;
    }
    let (bid, ask, bid_qty, ask_qty) = (bid as f64, ask as f64, bid_qty as f64, ask_qty as f64);
    let mid = (bid + ask) / 2.0;
    let microprice = if bid_qty + ask_qty > 0.0 {
        (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)
    } else {
        mid
    };
    let bid_volume: f64 = bids.iter().map(|l| l.1 as f64).sum();
    let ask_volume: f64 = asks.iter().map(|l| l.1 as f64).sum();
    let total = bid_volume + ask_volume;
    Some(Features {
        mid,
        spread_bps: (ask - bid) / mid * 10_000.0,
        microprice,
        imbalance: if total > 0.0 {
            (bid_volume - ask_volume) / total
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(time_us: i64, price: i64, qty: i64, buyer_maker: bool) -> TradeTick {
        TradeTick {
            time_us,
            price,
            qty,
            buyer_maker,
        }
    }

    #[test]
    fn a_window_rolls_and_keeps_exact_sums() {
        let mut w = TradeWindow::new(1_000_000);
        w.push(tick(0, 100, 2, false));
        w.push(tick(500_000, 110, 1, true));
        w.push(tick(900_000, 90, 1, false));
        let s = w.stats(900_000);
        assert_eq!(
            (s.count, s.volume, s.buy_volume, s.sell_volume),
            (3, 4, 3, 1)
        );
        assert_eq!((s.high, s.low, s.last), (Some(110), Some(90), Some(90)));
        assert_eq!(s.vwap(), Some((200 + 110 + 90) / 4));
        assert_eq!(s.flow_imbalance(), Some(0.5));
        // The first trade leaves the window one second after it happened.
        let s = w.stats(1_000_000);
        assert_eq!(
            (s.count, s.volume, s.high, s.low),
            (2, 2, Some(110), Some(90))
        );
        let s = w.stats(10_000_000);
        assert_eq!(s, WindowStats::default());
        assert_eq!(s.vwap(), None);
    }

    #[test]
    fn notional_does_not_overflow_at_binance_magnitudes() {
        let mut w = TradeWindow::new(5_000_000);
        for i in 0..1000 {
            w.push(tick(i, 10_000_000_000_000, 100_000_000_000, false));
        }
        let s = w.stats(999);
        assert_eq!(s.vwap(), Some(10_000_000_000_000));
    }

    #[test]
    fn features_of_a_book() {
        let bids = [
            (6_976_988_000_000, 1_301_000),
            (6_976_987_000_000, 1_000_000),
        ];
        let asks = [(6_976_989_000_000, 286_360_000)];
        let f = features(&bids, &asks).expect("a book");
        assert!((f.mid - 6_976_988_500_000.0).abs() < 1.0);
        assert!((f.spread_bps - 1_000_000.0 / 6_976_988_500_000.0 * 10_000.0).abs() < 1e-9);
        assert!(
            f.microprice > 6_976_988_000_000.0 && f.microprice < f.mid,
            "more size on the ask pulls toward the bid"
        );
        assert!(f.imbalance < 0.0);
        assert_eq!(features(&[], &asks), None);
        assert_eq!(features(&[(10, 1)], &[(10, 1)]), None, "crossed or locked");
    }
}
