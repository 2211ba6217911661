//! Rolling trade statistics and book features, the values the Redis writer keeps per symbol
//! (`tr:...:1s`, `tr:...:5s`, `feat:`). Pure: trades and book levels in, numbers out; exact
//! integer sums of mantissas, and every derived value an exact or consistently rounded decimal
//! (never an `f64`, whose noise would print as `69769.91500000001`).
//!
//! All prices and quantities are mantissas at one exponent per symbol (Binance: -8 and -8);
//! sums of `price x qty` are kept in `i128`, so no overflow for any realistic window.
//!
//! # Precision of the derived values
//! - `mid` = (bid + ask) / 2: exact, at one decimal more than the price ([`MID_EXTRA_DECIMALS`]).
//! - `microprice` = (bid x askQty + ask x bidQty) / (bidQty + askQty): rounded half away from
//!   zero at [`MICROPRICE_EXTRA_DECIMALS`] decimals more than the price.
//! - `spread_bps` = (ask - bid) / mid x 10000: rounded at [`SPREAD_BPS_DECIMALS`] decimals.
//! - `imbalance`, flow imbalance: ratios in -1..1 rounded at [`RATIO_DECIMALS`] decimals.
//! - VWAP: rounded down (toward zero) at the price exponent.

use std::collections::VecDeque;

use sbe_runtime::Decimal;

/// Decimals `mid` has beyond the price's: half of a sum of two prices is exact with one more.
pub const MID_EXTRA_DECIMALS: i8 = 1;
/// Decimals `microprice` has beyond the price's (rounded half away from zero).
pub const MICROPRICE_EXTRA_DECIMALS: i8 = 2;
/// Decimals of `spread_bps` (rounded half away from zero).
pub const SPREAD_BPS_DECIMALS: i8 = 4;
/// Decimals of the imbalance ratios (rounded half away from zero).
pub const RATIO_DECIMALS: i8 = 6;

/// `num / den` rounded half away from zero to a multiple of `10^exponent`, as a [`Decimal`] of
/// that exponent. `None` when `den` is 0 or the result does not fit.
fn rounded(num: i128, den: i128, exponent: i8) -> Option<Decimal> {
    if den == 0 {
        return None;
    }
    // num / den at 10^exponent: scale the numerator by 10^-exponent first.
    let scale = 10i128.checked_pow(u32::from(exponent.unsigned_abs()))?;
    let (num, den) = if exponent <= 0 {
        (num.checked_mul(scale)?, den)
    } else {
        (num, den.checked_mul(scale)?)
    };
    let (num, den) = if den < 0 { (-num, -den) } else { (num, den) };
    let half = den / 2;
    let q = if num >= 0 {
        (num + half) / den
    } else {
        (num - half) / den
    };
    Some(Decimal::new(i64::try_from(q).ok()?, exponent))
}

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

    /// Taker buy volume minus sell volume, over total volume: from -1 (all sells) to 1, at
    /// [`RATIO_DECIMALS`] decimals.
    pub fn flow_imbalance(&self) -> Option<Decimal> {
        if self.volume <= 0 {
            return None;
        }
        rounded(
            self.buy_volume - self.sell_volume,
            self.volume,
            -RATIO_DECIMALS,
        )
    }
}

/// A rolling window of trades over the last `span_us` microseconds, kept incrementally: sums
/// are running, high and low come from monotonic deques, and old trades are dropped as the
/// clock moves ([`TradeWindow::advance`], and every push), so each trade costs O(1) amortized
/// and memory is bounded by the trades of one span, whether or not anyone reads the window.
#[derive(Clone, Debug)]
pub struct TradeWindow {
    span_us: i64,
    /// The latest time seen (pushed trades and [`TradeWindow::advance`]).
    now_us: i64,
    /// Trades in the window, oldest first, numbered from `first_seq`.
    trades: VecDeque<TradeTick>,
    first_seq: u64,
    /// Candidates for the high: (sequence number, price), prices strictly decreasing.
    highs: VecDeque<(u64, i64)>,
    /// Candidates for the low: (sequence number, price), prices strictly increasing.
    lows: VecDeque<(u64, i64)>,
    sums: WindowStats,
}

impl TradeWindow {
    /// A window spanning `span_us` microseconds (1 s and 5 s in the Redis writer).
    pub fn new(span_us: i64) -> Self {
        TradeWindow {
            span_us: span_us.max(1),
            now_us: i64::MIN,
            trades: VecDeque::new(),
            first_seq: 0,
            highs: VecDeque::new(),
            lows: VecDeque::new(),
            sums: WindowStats::default(),
        }
    }

    /// Trades held now.
    pub fn len(&self) -> usize {
        self.trades.len()
    }

    /// Whether no trade is held.
    pub fn is_empty(&self) -> bool {
        self.trades.is_empty()
    }

    /// Adds a trade (trades arrive in time order per symbol) and drops those older than the
    /// window at the latest time seen.
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
        let seq = self.first_seq + self.trades.len() as u64;
        self.trades.push_back(trade);
        while self.highs.back().is_some_and(|&(_, p)| p <= trade.price) {
            self.highs.pop_back();
        }
        self.highs.push_back((seq, trade.price));
        while self.lows.back().is_some_and(|&(_, p)| p >= trade.price) {
            self.lows.pop_back();
        }
        self.lows.push_back((seq, trade.price));
        self.advance(trade.time_us);
    }

    /// Moves every mantissa to a finer exponent: prices times `10^price_digits`, quantities
    /// times `10^qty_digits`, exactly. `false` (the window unchanged) if a value overflows.
    pub fn rescale(&mut self, price_digits: u16, qty_digits: u16) -> bool {
        let scale = |digits: u16| 10i64.checked_pow(u32::from(digits));
        let (Some(ps), Some(qs)) = (scale(price_digits), scale(qty_digits)) else {
            return false;
        };
        let mut ticks = self.trades.clone();
        for t in ticks.iter_mut() {
            let (Some(price), Some(qty)) = (t.price.checked_mul(ps), t.qty.checked_mul(qs)) else {
                return false;
            };
            t.price = price;
            t.qty = qty;
        }
        let mut rescaled = TradeWindow::new(self.span_us);
        for t in ticks {
            rescaled.push(t);
        }
        rescaled.advance(self.now_us);
        *self = rescaled;
        true
    }

    /// Moves the clock to `now_us` (if later) and drops the trades older than the window then:
    /// those at or before `now_us - span_us`.
    pub fn advance(&mut self, now_us: i64) {
        self.now_us = self.now_us.max(now_us);
        let horizon = self.now_us.saturating_sub(self.span_us);
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
            let gone = self.first_seq;
            self.first_seq += 1;
            if self.highs.front().is_some_and(|&(s, _)| s == gone) {
                self.highs.pop_front();
            }
            if self.lows.front().is_some_and(|&(s, _)| s == gone) {
                self.lows.pop_front();
            }
        }
    }

    /// Drops trades older than the window at `now_us` and returns the statistics.
    pub fn stats(&mut self, now_us: i64) -> WindowStats {
        self.advance(now_us);
        self.current()
    }

    /// The statistics of the trades held, at the latest time seen.
    pub fn current(&self) -> WindowStats {
        let mut stats = self.sums;
        stats.high = self.highs.front().map(|&(_, p)| p);
        stats.low = self.lows.front().map(|&(_, p)| p);
        stats.last = self.trades.back().map(|t| t.price);
        stats
    }
}

/// Book features from the top of book and the top levels, as exact or rounded decimals (see
/// the module documentation for each one's precision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// (bid + ask) / 2, exact.
    pub mid: Decimal,
    /// (ask - bid) / mid, in basis points.
    pub spread_bps: Decimal,
    /// Size-weighted mid: (bid x askQty + ask x bidQty) / (bidQty + askQty); the mid when both
    /// quantities are 0.
    pub microprice: Decimal,
    /// (bid volume - ask volume) / (bid volume + ask volume) over the top levels given.
    pub imbalance: Decimal,
}

/// Features of a book whose best levels are `bids[0]` and `asks[0]` (price, qty mantissas,
/// prices at `price_exponent`), or `None` for an empty or crossed side (or prices so large
/// that a result would not fit).
pub fn features(bids: &[(i64, i64)], asks: &[(i64, i64)], price_exponent: i8) -> Option<Features> {
    let (&(bid, bid_qty), &(ask, ask_qty)) = (bids.first()?, asks.first()?);
    if bid <= 0 || ask <= bid {
        return None;
    }
    let (bid, ask, bid_qty, ask_qty) = (
        i128::from(bid),
        i128::from(ask),
        i128::from(bid_qty),
        i128::from(ask_qty),
    );
    let mid_exponent = price_exponent.checked_sub(MID_EXTRA_DECIMALS)?;
    let micro_exponent = price_exponent.checked_sub(MICROPRICE_EXTRA_DECIMALS)?;
    // (bid + ask) / 2 = (bid + ask) x 5 / 10: exact at one decimal more.
    let mid = Decimal::new(i64::try_from((bid + ask) * 5).ok()?, mid_exponent);
    let microprice = if bid_qty + ask_qty > 0 {
        rounded(
            bid.checked_mul(ask_qty)?
                .checked_add(ask.checked_mul(bid_qty)?)?,
            bid_qty + ask_qty,
            -MICROPRICE_EXTRA_DECIMALS,
        )?
    } else {
        rounded(bid + ask, 2, -MICROPRICE_EXTRA_DECIMALS)?
    };
    let microprice = Decimal::new(microprice.mantissa, micro_exponent);
    let bid_volume: i128 = bids.iter().map(|l| i128::from(l.1)).sum();
    let ask_volume: i128 = asks.iter().map(|l| i128::from(l.1)).sum();
    let total = bid_volume + ask_volume;
    Some(Features {
        mid,
        // (ask - bid) / ((ask + bid) / 2) x 10000.
        spread_bps: rounded((ask - bid) * 20_000, ask + bid, -SPREAD_BPS_DECIMALS)?,
        microprice,
        imbalance: if total > 0 {
            rounded(bid_volume - ask_volume, total, -RATIO_DECIMALS)?
        } else {
            Decimal::new(0, -RATIO_DECIMALS)
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
        assert_eq!(s.flow_imbalance(), Some(Decimal::new(500_000, -6)));
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

    /// The window as it was before it kept high and low incrementally: every trade kept until
    /// trimmed, statistics by a scan of all of them.
    struct Naive {
        span_us: i64,
        now_us: i64,
        trades: VecDeque<TradeTick>,
    }

    impl Naive {
        fn push(&mut self, t: TradeTick) {
            self.trades.push_back(t);
            self.advance(t.time_us);
        }

        fn advance(&mut self, now_us: i64) {
            self.now_us = self.now_us.max(now_us);
            let horizon = self.now_us.saturating_sub(self.span_us);
            while self.trades.front().is_some_and(|t| t.time_us <= horizon) {
                self.trades.pop_front();
            }
        }

        fn stats(&self) -> WindowStats {
            let mut s = WindowStats::default();
            for t in &self.trades {
                let qty = i128::from(t.qty);
                s.count += 1;
                s.volume += qty;
                if t.buyer_maker {
                    s.sell_volume += qty;
                } else {
                    s.buy_volume += qty;
                }
                s.notional += i128::from(t.price) * qty;
            }
            s.high = self.trades.iter().map(|t| t.price).max();
            s.low = self.trades.iter().map(|t| t.price).min();
            s.last = self.trades.back().map(|t| t.price);
            s
        }
    }

    /// One step of a run: a trade `dt` after the clock (sometimes before it: a late repaired
    /// trade), or the clock moving by `dt`, then the statistics read.
    #[derive(Clone, Debug)]
    enum Step {
        Trade {
            dt: i64,
            price: i64,
            qty: i64,
            buyer_maker: bool,
        },
        Clock {
            dt: i64,
        },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (-300i64..2_000, 1i64..60, 0i64..1_000, any::<bool>()).prop_map(
                |(dt, price, qty, buyer_maker)| Step::Trade { dt, price, qty, buyer_maker }
            ),
            1 => (0i64..3_000).prop_map(|dt| Step::Clock { dt }),
        ]
    }

    proptest::proptest! {
        /// The incremental window says what a scan of the trades it holds says, after every
        /// step, and holds no more trades than the scan keeps (bounded by the span).
        #[test]
        fn the_incremental_window_agrees_with_a_naive_scan(
            span in 1i64..5_000,
            steps in proptest::collection::vec(step(), 1..300),
        ) {
            let mut window = TradeWindow::new(span);
            let mut naive = Naive { span_us: span, now_us: i64::MIN, trades: VecDeque::new() };
            let mut clock = 0i64;
            for s in steps {
                match s {
                    Step::Trade { dt, price, qty, buyer_maker } => {
                        let t = tick(clock + dt, price, qty, buyer_maker);
                        clock = clock.max(t.time_us);
                        window.push(t);
                        naive.push(t);
                    }
                    Step::Clock { dt } => {
                        clock += dt;
                        window.advance(clock);
                        naive.advance(clock);
                    }
                }
                proptest::prop_assert_eq!(window.current(), naive.stats());
                proptest::prop_assert_eq!(window.len(), naive.trades.len());
                naive.advance(clock);
                proptest::prop_assert_eq!(window.stats(clock), naive.stats());
            }
        }
    }

    /// Regression: windows were trimmed only when written, so while Redis was down a busy
    /// symbol's windows grew without bound. Every push trims now.
    #[test]
    fn a_window_nobody_reads_stays_within_its_span() {
        let mut w = TradeWindow::new(1_000_000);
        for i in 0..100_000 {
            w.push(tick(i * 100, 100 + i % 7, 1, i % 2 == 0));
        }
        // A trade every 100 µs: 10,000 in any second.
        assert_eq!(w.len(), 10_000);
        let s = w.current();
        assert_eq!((s.count, s.high, s.low), (10_000, Some(106), Some(100)));
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
        let f = features(&bids, &asks, -8).expect("a book");
        assert_eq!(f.mid.to_string(), "69769.885000000");
        // 0.01 / 69769.885 x 10000 = 0.00143328... bps.
        assert_eq!(f.spread_bps.to_string(), "0.0014");
        // (69769.88 x 2.8636 + 69769.89 x 0.01301) / 2.87661 = 69769.88004522684...
        assert_eq!(f.microprice.to_string(), "69769.8800452268");
        // (0.02301 - 2.8636) / 2.88661 = -0.9840574...
        assert_eq!(f.imbalance.to_string(), "-0.984057");
        assert_eq!(features(&[], &asks, -8), None);
        assert_eq!(
            features(&[(10, 1)], &[(10, 1)], -8),
            None,
            "crossed or locked"
        );
    }

    /// Regression: `feat:{S}` printed `mid 69769.91500000001`, float noise from two exact
    /// prices. The mid is exact at one more decimal; the microprice rounds consistently.
    #[test]
    fn mid_and_microprice_are_exact_decimals() {
        let f = features(&[(6_976_991_000_000, 1)], &[(6_976_992_000_000, 1)], -8).expect("a book");
        assert_eq!(f.mid.to_string(), "69769.915000000");
        assert_eq!(f.microprice.to_string(), "69769.9150000000");
        // 1 x 1 + 2 x 2 = 5, over 3: 1.666..., rounded at 2 more decimals than the price.
        let f = features(&[(1, 2)], &[(2, 1)], 0).expect("a book");
        assert_eq!(
            (f.mid.to_string(), f.microprice.to_string()),
            ("1.5".into(), "1.67".into())
        );
        // Negative ratios round away from zero too: (1 - 2) / 3 = -0.333333...
        assert_eq!(f.imbalance.to_string(), "0.333333");
        let f = features(&[(1, 1)], &[(2, 2)], 0).expect("a book");
        assert_eq!(f.imbalance.to_string(), "-0.333333");
        assert_eq!(f.microprice.to_string(), "1.33");
        // Both quantities 0: the mid, at the microprice's precision.
        let f = features(&[(1, 0)], &[(2, 0)], 0).expect("a book");
        assert_eq!(f.microprice.to_string(), "1.50");
        assert_eq!(f.imbalance.to_string(), "0.000000");
        // Rounding half away from zero.
        assert_eq!(rounded(5, 2, 0), Some(Decimal::new(3, 0)));
        assert_eq!(rounded(-5, 2, 0), Some(Decimal::new(-3, 0)));
        assert_eq!(rounded(1, 0, 0), None);
    }
}
