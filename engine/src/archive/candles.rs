//! The candles the live archive writes, pure: one symbol's [`Series`] (`crate::kline`, the
//! same builder the Redis and Kinesis writers use) fed with the trades the S3 writer delivers
//! (each id once, in id order, `sink::order`), and for each candle it closes whether the
//! trades it covers are complete.
//!
//! **Complete** means no trade id is missing around it. Binance numbers a symbol's trades
//! 1, 2, 3, ..., so the writer sees a gap as a jump of the id: trades the sidecar gave up on
//! (`GaveUp`), or held past `sidecar.hold_max`. The missing trades lie in time between the
//! trade before the jump and the one after, so every candle from the interval of the one to
//! the interval of the other is marked incomplete and is not archived (counted; `hotpath
//! backfill klines --s3` fills such candles from REST later). While a gap is open the writer
//! holds the trades after it (`sink::order`) and the candle is not closed by the clock
//! ([`SymbolCandles::advance`] with `held`), so a candle is only ever judged once the gap is
//! repaired or given up. The first candle after a start is partial and never comes out
//! (`Series`); a candle with a trade not exact at 10^-18 is incomplete too.
//!
//! A trade late enough to revise a candle already closed (by the clock, more than
//! `s3.close_grace_ms` after its interval) comes out as a revision: the writer replaces the
//! candle if it is not written yet, and otherwise counts it. The clock cannot see a gap before
//! the trade after it comes (a connection lost for longer than the grace): candles that came
//! out before a gap that touches them showed, and a candle a trade comes too late for (older
//! than the candle closed last, so left out of it), come out again as incomplete revisions,
//! which the writer takes back if they are not written yet.

use super::DECIMAL_SCALE;
use super::TradeRow;
use crate::kline::{Candle, FILL_MAX, Interval, Series, Trade};

/// A candle closed by [`SymbolCandles`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The candle.
    pub candle: Candle,
    /// Every trade of its interval was delivered (see the module doc).
    pub complete: bool,
    /// It revises a candle that came out before (same open time).
    pub revision: bool,
}

/// One symbol's candles of one interval, with its gaps.
#[derive(Clone, Debug)]
pub struct SymbolCandles {
    series: Series,
    /// The last trade delivered: id and time (ms).
    last: Option<(i64, i64)>,
    /// Open-time ranges (inclusive) of the candles a gap touches.
    tainted: Vec<(i64, i64)>,
    /// The open time of the newest candle that came out.
    newest_ms: Option<i64>,
    scratch: Vec<Candle>,
}

impl SymbolCandles {
    /// No candle yet.
    pub fn new(interval: Interval) -> SymbolCandles {
        SymbolCandles {
            series: Series::new(interval),
            last: None,
            tainted: Vec::new(),
            newest_ms: None,
            scratch: Vec::new(),
        }
    }

    /// Takes the next trade delivered; pushes the candles it closes onto `out`.
    pub fn push(&mut self, row: &TradeRow, out: &mut Vec<Closed>) {
        let time_ms = row.trade_time_us.div_euclid(1000);
        let interval = self.series.interval;
        let jumped = self
            .last
            .is_some_and(|(id, _)| row.trade_id != id.saturating_add(1));
        if let Some((_, at_ms)) = self.last.filter(|_| jumped) {
            let (from, to) = (interval.open_of(at_ms), interval.open_of(time_ms));
            self.tainted.push((from, to));
            self.take_back(from, to, out);
        }
        self.last = Some((row.trade_id, time_ms));
        let trade = Trade {
            id: row.trade_id,
            time_ms,
            price: row.price,
            qty: row.qty,
            exponents: (-DECIMAL_SCALE, -DECIMAL_SCALE),
            buyer_maker: row.is_buyer_maker,
        };
        let mut closed = std::mem::take(&mut self.scratch);
        let late = self.series.late;
        self.series.push(&trade, &mut closed);
        let late = self.series.late != late;
        if late {
            // Older than the candle closed last: left out of its candle, which lacks it, and
            // the flat ones after it carry a close it changes.
            let open = interval.open_of(time_ms);
            self.take_back(open, i64::MAX, out);
        }
        if jumped || late {
            // The series publishes the candles out already again, marked with the ids missing
            // (`Candle::missing_trades`): `take_back` did so here.
            let newest = self.newest_ms;
            closed.retain(|c| c.missing_trades == 0 || newest.is_none_or(|n| c.open_ms > n));
        }
        self.judge(&mut closed, out);
        self.scratch = closed;
    }

    /// The candles from `from` to `to` (open times) that came out already lack trades: each
    /// comes out again as an incomplete revision (the writer takes it back if not written).
    /// At most [`FILL_MAX`] of them, the newest (older ones left memory long ago).
    fn take_back(&mut self, from: i64, to: i64, out: &mut Vec<Closed>) {
        let Some(newest) = self.newest_ms else {
            return;
        };
        let interval = self.series.interval;
        let last = to.min(newest);
        let mut at = from.max(last.saturating_sub(FILL_MAX.saturating_mul(interval.ms)));
        while at <= last {
            out.push(Closed {
                candle: Candle::flat(at, interval, 0),
                complete: false,
                revision: true,
            });
            at = at.saturating_add(interval.ms);
        }
    }

    /// The clock is at `now_ms`: closes the candles that ended `grace_ms` ago, unless trades
    /// of the symbol are `held` for a repair.
    pub fn advance(&mut self, now_ms: i64, grace_ms: i64, held: bool, out: &mut Vec<Closed>) {
        let mut closed = std::mem::take(&mut self.scratch);
        self.series.advance(now_ms, grace_ms, held, &mut closed);
        self.judge(&mut closed, out);
        self.scratch = closed;
    }

    fn judge(&mut self, closed: &mut Vec<Candle>, out: &mut Vec<Closed>) {
        for candle in closed.drain(..) {
            let at = candle.open_ms;
            let touched = self.tainted.iter().any(|&(a, b)| a <= at && at <= b);
            let revision = self.newest_ms.is_some_and(|n| at <= n);
            self.newest_ms = Some(self.newest_ms.map_or(at, |n| n.max(at)));
            self.tainted.retain(|&(_, b)| b >= at);
            out.push(Closed {
                candle,
                complete: !touched && !candle.inexact && candle.missing_trades == 0,
                revision,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn row(id: i64, time_ms: i64, price: i64) -> TradeRow {
        TradeRow {
            trade_id: id,
            price,
            qty: 100_000_000,
            trade_time_us: time_ms * 1000,
            event_time_us: time_ms * 1000,
            is_buyer_maker: id % 2 == 0,
        }
    }

    fn minutes() -> SymbolCandles {
        SymbolCandles::new(Interval::of("1m").expect("1m"))
    }

    #[test]
    fn contiguous_trades_make_complete_candles_after_the_partial_first() {
        let mut c = minutes();
        let mut out = Vec::new();
        // Minute 0 (partial, never out), 1, 2, then a trade of minute 3 closes minute 2.
        for (id, t) in [
            (1, 10),
            (2, MIN + 5),
            (3, MIN + 9),
            (4, 2 * MIN),
            (5, 3 * MIN),
        ] {
            c.push(&row(id, t, 100 + id), &mut out);
        }
        let got: Vec<(i64, u64, bool)> = out
            .iter()
            .map(|o| (o.candle.open_ms, o.candle.trades, o.complete))
            .collect();
        assert_eq!(got, vec![(MIN, 2, true), (2 * MIN, 1, true)]);
        assert_eq!((out[0].candle.first_id, out[0].candle.last_id), (2, 3));
        assert_eq!(out[0].candle.volume, 2 * 10i128.pow(18));
    }

    #[test]
    fn a_gap_makes_every_candle_it_may_touch_incomplete() {
        let mut c = minutes();
        let mut out = Vec::new();
        // Ids 1..=3 in minutes 0..=1, then id 10 in minute 3 (ids 4..=9 never came), then
        // contiguous again in minutes 4 and 5.
        for (id, t) in [(1, 0), (2, MIN), (3, MIN + 1), (10, 3 * MIN), (11, 4 * MIN)] {
            c.push(&row(id, t, 7), &mut out);
        }
        c.push(&row(12, 5 * MIN, 7), &mut out);
        let got: Vec<(i64, bool)> = out
            .iter()
            .map(|o| (o.candle.open_ms / MIN, o.complete))
            .collect();
        // Minutes 1, 2 (flat) and 3 may hold ids 4..=9; minute 4 does not.
        assert_eq!(got, vec![(1, false), (2, false), (3, false), (4, true)]);
    }

    #[test]
    fn the_clock_closes_unless_trades_are_held_and_late_trades_revise() {
        let mut c = minutes();
        let mut out = Vec::new();
        c.push(&row(1, 0, 1), &mut out);
        c.push(&row(2, MIN, 1), &mut out);
        c.advance(2 * MIN + 500, 1000, false, &mut out);
        assert!(out.is_empty(), "within the grace");
        c.advance(2 * MIN + 5000, 1000, true, &mut out);
        assert!(out.is_empty(), "held");
        c.advance(2 * MIN + 5000, 1000, false, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].complete && !out[0].revision);
        c.push(&row(3, MIN + 30_000, 1), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[1].revision && out[1].complete);
        assert_eq!(out[1].candle.trades, 2);
    }

    /// Review 11: a gap shows only when the trade after it comes. Candles the clock closed
    /// before that (a connection lost across them) came out complete and stayed so, though
    /// the missing trades may lie in them; they are now taken back (an incomplete revision).
    #[test]
    fn a_gap_seen_after_the_clock_closed_candles_takes_them_back() {
        let mut c = minutes();
        let mut out = Vec::new();
        c.push(&row(1, 0, 1), &mut out);
        c.push(&row(2, MIN + 5, 1), &mut out);
        c.advance(3 * MIN + 5000, 1000, false, &mut out);
        let got: Vec<(i64, bool)> = out
            .iter()
            .map(|o| (o.candle.open_ms / MIN, o.complete))
            .collect();
        assert_eq!(got, vec![(1, true), (2, true)], "minute 2 flat");
        out.clear();
        // Ids 3..=9 never come: the trade after them shows the gap, in minute 3.
        c.push(&row(10, 3 * MIN + 10, 1), &mut out);
        let got: Vec<(i64, bool, bool)> = out
            .iter()
            .map(|o| (o.candle.open_ms / MIN, o.complete, o.revision))
            .collect();
        assert_eq!(got, vec![(1, false, true), (2, false, true)]);
    }

    /// Review 11: a trade older than the candle closed last (repaired after the clock closed
    /// its candle and the next) was left out of its candle, which stayed complete.
    #[test]
    fn a_trade_older_than_the_last_closed_candle_takes_its_candle_back() {
        let mut c = minutes();
        let mut out = Vec::new();
        c.push(&row(1, 0, 1), &mut out);
        c.push(&row(2, MIN + 5, 1), &mut out);
        c.advance(3 * MIN + 5000, 1000, false, &mut out);
        out.clear();
        // Review 14: at another price, the flat minute 2 after it (at minute 1's close) is
        // wrong too: taken back as well, and the series' own marked re-emissions not twice.
        c.push(&row(3, MIN + 30_000, 2), &mut out);
        let got: Vec<(i64, bool, bool)> = out
            .iter()
            .map(|o| (o.candle.open_ms / MIN, o.complete, o.revision))
            .collect();
        assert_eq!(got, vec![(1, false, true), (2, false, true)]);
    }

    /// The candle of every row of the interval opening at `open_ms` (flat at the close before
    /// it without any).
    fn truth(rows: &[TradeRow], open_ms: i64, interval: Interval) -> Candle {
        let before = rows.iter().rev().find(|r| r.trade_time_us / 1000 < open_ms);
        let price = before.map_or(0, |r| i128::from(r.price) * 10i128.pow(10));
        let mut truth = Candle::flat(open_ms, interval, price);
        for r in rows
            .iter()
            .filter(|r| interval.open_of(r.trade_time_us / 1000) == open_ms)
        {
            truth.add(&Trade {
                id: r.trade_id,
                time_ms: r.trade_time_us / 1000,
                price: r.price,
                qty: r.qty,
                exponents: (-DECIMAL_SCALE, -DECIMAL_SCALE),
                buyer_maker: r.is_buyer_maker,
            });
        }
        truth
    }

    /// Review 14: random trades, some ids given up, the clock running ahead of trades lost or
    /// late. Applying what comes out as the S3 writer does while nothing is written yet (a
    /// complete candle is archived, a complete revision replaces it, an incomplete one takes
    /// it back), every candle archived equals the candle of every trade of its interval.
    /// Candles ending after the last trade delivered are not judged.
    #[test]
    fn every_candle_archived_holds_every_trade_of_its_interval() {
        let interval = Interval::of("1s").expect("1s");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for case in 0..2_000 {
            let mut time = 10_000;
            let rows: Vec<TradeRow> = (1..=20 + next(60) as i64)
                .map(|id| {
                    time += [0, 1, 50, 400, 1_000, 2_500][next(6) as usize];
                    row(id, time, (100 + next(50) as i64) * 1_000_000)
                })
                .collect();
            let drop_pct = [0, 10, 40][next(3) as usize];
            let mut c = SymbolCandles::new(interval);
            let mut archived = std::collections::BTreeMap::new();
            let mut out = Vec::new();
            let (mut clock, mut last_delivered) = (0, 0);
            for (i, r) in rows.iter().enumerate() {
                if next(3) == 0 {
                    let ahead = rows[(i + next(4) as usize).min(rows.len() - 1)].trade_time_us;
                    clock = clock.max(ahead / 1000 + next(1_500) as i64);
                    c.advance(clock, 300, false, &mut out);
                }
                if i > 0 && next(100) < drop_pct {
                    continue;
                }
                c.push(r, &mut out);
                last_delivered = r.trade_time_us / 1000;
                for o in out.drain(..) {
                    let at = o.candle.open_ms;
                    match (o.revision, o.complete) {
                        (false, true) => drop(archived.insert(at, o.candle)),
                        (true, true) if archived.contains_key(&at) => {
                            archived.insert(at, o.candle);
                        }
                        (true, false) => drop(archived.remove(&at)),
                        _ => {}
                    }
                }
            }
            for (open_ms, candle) in &archived {
                if candle.close_ms >= last_delivered {
                    continue;
                }
                let truth = truth(&rows, *open_ms, interval);
                assert_eq!(*candle, truth, "case {case}");
            }
        }
    }
}
