//! The periodic kline check, pure: every consistency interval, for the last kline interval
//! closed at least `lateness` ago, Binance's kline of each symbol
//! (`GET /api/v3/klines?symbol=S&interval=1m&startTime=..&limit=1`) is compared with what each
//! sink delivered for that interval ([`crate::tally`]): the trade count and the exact volume.
//! A sink that delivered less (trades lost where the sequence check cannot see them: the last
//! trades before a symbol goes quiet, dropped on the wire) gets the interval's trades
//! backfilled: the first trade id of the interval comes from
//! `GET /api/v3/aggTrades?startTime=..&endTime=..&limit=1` (`f`), and the interval's ids are
//! `f ..= f + count - 1` (a symbol's trade ids are consecutive in time). The sinks deliver each
//! id once, so the ids they had are dropped as duplicates.
//!
//! The stream kline check ([`judge_stream`]) needs no REST at all: in JSON mode with
//! `[klines] intervals`, each closed kline of Binance's kline stream (`x: true`) says the
//! interval's trade count (`n`), first and last trade ids (`f`, `L`) and volume (`v`); once the
//! interval closed `lateness` ago, each sink's tally is compared with it (summed over the tally
//! intervals a longer kline spans), and a sink that disagrees gets `f ..= L` backfilled. A
//! check interval a closed stream kline covered needs no REST kline check.
//!
//! Time is an argument; the shell owns the REST client and the clock.

use crate::binance::rest::{RestAggTrade, RestKline};
use crate::feed::event::StreamKline;

use crate::tally::{Interval, Seen, parse_volume};

/// The Binance name of an interval of `ms` (the check uses "1m", or "1s" for tests).
pub fn interval_name(ms: i64) -> &'static str {
    if ms == 1_000 { "1s" } else { "1m" }
}

/// When checks are due and which interval they look at.
#[derive(Clone, Debug)]
pub struct KlineSchedule {
    interval_ms: i64,
    lateness_ms: i64,
    every_ms: i64,
    next_ms: i64,
    /// The interval last checked (its open time), per symbol.
    checked: Vec<i64>,
}

impl KlineSchedule {
    /// Checks every `every_ms` of intervals of `interval_ms`, each once it closed
    /// `lateness_ms` ago; the first at `now_ms + every_ms`.
    pub fn new(interval_ms: i64, lateness_ms: i64, every_ms: i64, now_ms: i64) -> KlineSchedule {
        KlineSchedule {
            interval_ms: interval_ms.max(1),
            lateness_ms: lateness_ms.max(0),
            every_ms: every_ms.max(1),
            next_ms: now_ms.saturating_add(every_ms.max(1)),
            checked: Vec::new(),
        }
    }

    /// The interval length, ms.
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// The open time of the last interval closed `lateness` before `now_ms`.
    pub fn last_closed(&self, now_ms: i64) -> i64 {
        let at = now_ms.saturating_sub(self.lateness_ms);
        (at - at.rem_euclid(self.interval_ms)).saturating_sub(self.interval_ms)
    }

    /// Whether a check is due at `now_ms`.
    pub fn is_due(&self, now_ms: i64) -> bool {
        now_ms >= self.next_ms
    }

    /// When a check is due at `now_ms`: the symbols (of `0..symbols`) to check and the
    /// interval's open time, each symbol's interval at most once. A check that came late
    /// (the sidecar was busy past the next interval's close) also takes the interval before
    /// the last closed one if that was not checked, so checks every interval never skip one
    /// by drifting.
    pub fn due(&mut self, now_ms: i64, symbols: usize, out: &mut Vec<(u16, i64)>) {
        if now_ms < self.next_ms {
            return;
        }
        self.next_ms = now_ms.saturating_add(self.every_ms);
        let open_ms = self.last_closed(now_ms);
        if self.checked.len() < symbols {
            self.checked.resize(symbols, i64::MIN);
        }
        let previous = open_ms.saturating_sub(self.interval_ms);
        for (symbol, checked) in self.checked.iter_mut().enumerate().take(symbols) {
            let Ok(index) = u16::try_from(symbol) else {
                break;
            };
            // A symbol's first check takes the last closed interval only.
            if *checked != i64::MIN && *checked < previous {
                out.push((index, previous));
            }
            if *checked < open_ms {
                *checked = open_ms;
                out.push((index, open_ms));
            }
        }
    }
}

/// One kline as the check needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kline {
    /// Open time, Unix ms.
    pub open_ms: i64,
    /// Base asset volume, mantissa at [`crate::tally::VOLUME_EXPONENT`].
    pub volume: i128,
    /// Number of trades.
    pub count: u64,
}

/// The kline opening at `open_ms` out of a `/api/v3/klines` answer; an answer without it (the
/// interval had no trades and none came after) is an empty kline. `None`: not understood.
pub fn parse_kline(rows: &[RestKline], open_ms: i64) -> Option<Kline> {
    if let Some(row) = rows.iter().find(|row| row.open_ms == open_ms) {
        return Some(Kline {
            open_ms,
            volume: parse_volume(&row.volume)?,
            count: row.count,
        });
    }
    Some(Kline {
        open_ms,
        volume: 0,
        count: 0,
    })
}

/// The first trade id (`f`) of the first aggregate of an `/api/v3/aggTrades` answer.
pub fn parse_first_trade_id(aggregates: &[RestAggTrade]) -> Option<i64> {
    aggregates.first().map(|a| a.first_trade_id)
}

/// What one sink's tally says against the kline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Count and volume agree.
    Consistent,
    /// They differ: the interval's trades are backfilled for this sink.
    Mismatch,
    /// The sink did not watch the whole interval, or summed it inexactly: not judged.
    Unjudged,
}

/// Judges one sink's view of an interval against the kline.
pub fn judge(kline: &Kline, seen: Seen) -> Judgement {
    match seen {
        Seen::NotWatched => Judgement::Unjudged,
        Seen::Delivered(Interval { inexact: true, .. }) => Judgement::Unjudged,
        Seen::Delivered(interval) => {
            if interval.count == kline.count && interval.volume == kline.volume {
                Judgement::Consistent
            } else {
                Judgement::Mismatch
            }
        }
    }
}

/// Whether closed stream klines of `kline_ms` can be judged against a tally of `tally_ms`
/// intervals at all: a whole number of them, no more than the tally keeps. (One that can may
/// still go unjudged, when a part of it was not watched.)
pub fn judgeable(kline_ms: i64, tally_ms: i64) -> bool {
    tally_ms > 0
        && kline_ms > 0
        && kline_ms % tally_ms == 0
        && usize::try_from(kline_ms / tally_ms).is_ok_and(|n| n <= crate::tally::INTERVALS_KEPT)
}

/// Judges one sink's view against a closed stream kline: its tally (by intervals of
/// `tally_ms`, `seen` giving the one opening at a time) summed over the kline's interval must
/// hold its trade count and exact volume, and its first and last trade ids. Unjudged when the
/// kline's interval is not a whole number of tally intervals, or a part of it was not watched
/// whole or summed exactly.
pub fn judge_stream(kline: &StreamKline, tally_ms: i64, seen: impl Fn(i64) -> Seen) -> Judgement {
    if !judgeable(kline.interval_ms, tally_ms) {
        return Judgement::Unjudged;
    }
    let mut total = Interval::default();
    let mut at = kline.open_ms;
    while at <= kline.close_ms() {
        let part = match seen(at) {
            Seen::Delivered(part) if !part.inexact => part,
            _ => return Judgement::Unjudged,
        };
        if part.count > 0 {
            if total.count == 0 {
                (total.first_id, total.last_id) = (part.first_id, part.last_id);
            }
            total.first_id = total.first_id.min(part.first_id);
            total.last_id = total.last_id.max(part.last_id);
        }
        total.count += part.count;
        total.volume = total.volume.saturating_add(part.volume);
        at = at.saturating_add(tally_ms);
    }
    let ids_agree =
        kline.trades == 0 || (total.first_id == kline.first_id && total.last_id == kline.last_id);
    if total.count == kline.trades && total.volume == kline.volume && ids_agree {
        Judgement::Consistent
    } else {
        Judgement::Mismatch
    }
}

/// The trade ids of an interval whose first trade is `first_id` and which holds `count`
/// trades; `None` when it holds none.
pub fn interval_ids(first_id: i64, count: u64) -> Option<(i64, i64)> {
    let count = i64::try_from(count).ok().filter(|&c| c > 0)?;
    Some((first_id, first_id.checked_add(count - 1)?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn checks_look_at_the_last_interval_closed_before_the_lateness_once_per_symbol() {
        let mut s = KlineSchedule::new(60_000, 10_000, 60_000, 0);
        let mut out = Vec::new();
        s.due(59_999, 2, &mut out);
        assert!(out.is_empty(), "not due yet");
        // At 130 s with 10 s lateness: the minute 60..120 s closed at 120 s, 10 s ago.
        s.due(130_000, 2, &mut out);
        assert_eq!(out, vec![(0, 60_000), (1, 60_000)]);
        out.clear();
        // At 129.999 s the same minute would not have been due yet.
        assert_eq!(s.last_closed(129_999), 0);
        // The next check sees a new minute; a symbol added meanwhile is checked too.
        s.due(190_000, 3, &mut out);
        assert_eq!(out, vec![(0, 120_000), (1, 120_000), (2, 120_000)]);
        out.clear();
        // A check too soon after the last one for a new interval does nothing.
        s.due(200_000, 3, &mut out);
        assert!(out.is_empty());
        // A late check (at 311 s the minute 180..240 s closed long ago, and 240..300 s is the
        // last closed) takes the minute it would have skipped too, never more.
        s.due(311_000, 3, &mut out);
        let expected: Vec<(u16, i64)> = (0..3).flat_map(|s| [(s, 180_000), (s, 240_000)]).collect();
        assert_eq!(out, expected);
        out.clear();
        s.due(600_000, 3, &mut out);
        assert_eq!(out.len(), 6, "two intervals each at most: {out:?}");
    }

    #[test]
    fn klines_and_agg_trades_are_read_exactly() {
        let body = json!([[
            60_000,
            "1.0",
            "1.0",
            "1.0",
            "1.0",
            "0.00300000",
            119_999,
            "0.003",
            3,
            "0",
            "0",
            "0"
        ]]);
        let rows: Vec<RestKline> = serde_json::from_value(body).expect("klines");
        let kline = parse_kline(&rows, 60_000).expect("a kline");
        assert_eq!(kline.count, 3);
        assert_eq!(kline.volume, 3 * 10i128.pow(15));
        assert_eq!(
            parse_kline(&[], 60_000),
            Some(Kline {
                open_ms: 60_000,
                volume: 0,
                count: 0
            })
        );
        let inexact = RestKline {
            open_ms: 60_000,
            volume: "1e3".into(),
            count: 1,
            ..serde_json::from_value(json!([
                0, "1", "1", "1", "1", "0", 59_999, "0", 0, "0", "0", "0"
            ]))
            .expect("a kline")
        };
        assert_eq!(parse_kline(&[inexact], 60_000), None);
        assert!(serde_json::from_value::<Vec<RestKline>>(json!({"code": -1})).is_err());
        let aggregates: Vec<RestAggTrade> =
            serde_json::from_value(json!([{"a": 7, "f": 7, "l": 9, "T": 5}])).expect("aggregates");
        assert_eq!(parse_first_trade_id(&aggregates), Some(7));
        assert_eq!(parse_first_trade_id(&[]), None);
        assert_eq!(interval_ids(7, 3), Some((7, 9)));
        assert_eq!(interval_ids(7, 0), None);
    }

    /// A closed stream kline of ids 10..=14 (5 trades, volume 50) against tallies by second.
    /// A stream kline can be judged only over a whole number of tally intervals that the
    /// tally still keeps: 1m on a 1s tally not (60 > 8), 1s on a 1m tally not (not whole).
    #[test]
    fn only_whole_kept_tally_intervals_make_a_stream_kline_judgeable() {
        assert!(judgeable(60_000, 60_000));
        assert!(judgeable(3_000, 1_000));
        assert!(judgeable(8_000, 1_000));
        assert!(!judgeable(9_000, 1_000), "more than the tally keeps");
        assert!(!judgeable(60_000, 1_000));
        assert!(
            !judgeable(1_000, 60_000),
            "not a whole number of tally intervals"
        );
        assert!(!judgeable(90_000, 60_000));
        assert!(!judgeable(60_000, 0) && !judgeable(0, 60_000));
    }

    #[test]
    fn a_stream_kline_is_judged_on_count_volume_and_ids_summed_over_the_tally() {
        let kline = StreamKline {
            symbol: 0,
            interval_ms: 2_000,
            open_ms: 4_000,
            first_id: 10,
            last_id: 14,
            trades: 5,
            volume: 50,
        };
        let part = |open_ms, count, first_id, last_id| {
            Seen::Delivered(Interval {
                open_ms,
                count,
                volume: 10 * count as i128,
                inexact: false,
                first_id,
                last_id,
            })
        };
        let whole = |at: i64| match at {
            4_000 => part(4_000, 2, 10, 11),
            5_000 => part(5_000, 3, 12, 14),
            _ => panic!("only the kline's seconds are asked: {at}"),
        };
        assert_eq!(judge_stream(&kline, 1_000, whole), Judgement::Consistent);
        // The last trade lost on the wire: count, volume and L disagree.
        let lost_last = |at: i64| match at {
            4_000 => part(4_000, 2, 10, 11),
            _ => part(5_000, 2, 12, 13),
        };
        assert_eq!(judge_stream(&kline, 1_000, lost_last), Judgement::Mismatch);
        // Same count and volume but other ids (a trade of another interval): a mismatch.
        let shifted = |at: i64| match at {
            4_000 => part(4_000, 2, 11, 12),
            _ => part(5_000, 3, 13, 15),
        };
        assert_eq!(judge_stream(&kline, 1_000, shifted), Judgement::Mismatch);
        // One tally interval spanning the kline.
        assert_eq!(
            judge_stream(&kline, 2_000, |at| part(at, 5, 10, 14)),
            Judgement::Consistent
        );
        // Not watched whole, inexact, or a kline shorter than the tally's: not judged.
        let unwatched = |at: i64| match at {
            4_000 => Seen::NotWatched,
            _ => part(5_000, 3, 12, 14),
        };
        assert_eq!(judge_stream(&kline, 1_000, unwatched), Judgement::Unjudged);
        let inexact = |_| {
            Seen::Delivered(Interval {
                inexact: true,
                ..Interval::default()
            })
        };
        assert_eq!(judge_stream(&kline, 1_000, inexact), Judgement::Unjudged);
        assert_eq!(judge_stream(&kline, 60_000, whole), Judgement::Unjudged);
        // An interval without trades agrees with a tally without trades, whatever f and L say.
        let empty = StreamKline {
            trades: 0,
            volume: 0,
            first_id: -1,
            last_id: -1,
            ..kline
        };
        assert_eq!(
            judge_stream(&empty, 1_000, |at| part(at, 0, 0, 0)),
            Judgement::Consistent
        );
    }

    #[test]
    fn a_sink_is_judged_only_on_an_interval_it_watched_whole_and_exactly() {
        let kline = Kline {
            open_ms: 0,
            volume: 30,
            count: 3,
        };
        let seen = |count, volume, inexact| {
            Seen::Delivered(Interval {
                open_ms: 0,
                count,
                volume,
                inexact,
                ..Interval::default()
            })
        };
        assert_eq!(judge(&kline, seen(3, 30, false)), Judgement::Consistent);
        assert_eq!(judge(&kline, seen(2, 20, false)), Judgement::Mismatch);
        assert_eq!(judge(&kline, seen(3, 29, false)), Judgement::Mismatch);
        assert_eq!(judge(&kline, seen(2, 20, true)), Judgement::Unjudged);
        assert_eq!(judge(&kline, Seen::NotWatched), Judgement::Unjudged);
    }
}
