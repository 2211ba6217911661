//! What a sink delivered, per symbol and kline interval: the trade count and the exact volume
//! (base quantity) by trade time, and the last trade id delivered. Each sink keeps one (in its
//! `SinkStats`) and adds every trade frame it delivers (live or repaired, from the first id it
//! delivers); the sidecar reads it to compare a closed interval with Binance's kline
//! (`sidecar::klines`) and to know where a silent trade stream's backfill starts
//! (`sidecar::silence`). A leaf: the sinks and the sidecar share it without knowing each other.
//!
//! Off the hot path: the sink's thread adds once per delivered event under an uncontended
//! mutex; the sidecar reads it once per check. Volumes are exact: quantities are summed as
//! mantissas at [`VOLUME_EXPONENT`] in an `i128` (never floats); a quantity whose exponent is
//! finer than that marks its interval inexact, and such an interval is never judged.

use std::sync::Mutex;

use crate::sbe::spot_stream::Message;

/// The exponent volumes are summed at: finer than any Binance quantity (`10^-8`).
pub const VOLUME_EXPONENT: i8 = -18;

/// Intervals kept per symbol: the ones a check may still ask about.
pub const INTERVALS_KEPT: usize = 8;

/// One interval's delivered trades.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// Its open time, Unix milliseconds.
    pub open_ms: i64,
    /// Trades delivered in it.
    pub count: u64,
    /// Their summed quantity, mantissa at [`VOLUME_EXPONENT`].
    pub volume: i128,
    /// A quantity could not be added exactly: the interval is not judged.
    pub inexact: bool,
    /// The lowest trade id delivered in it (meaningful when `count` > 0).
    pub first_id: i64,
    /// The highest trade id delivered in it (meaningful when `count` > 0).
    pub last_id: i64,
}

/// One symbol's tally.
#[derive(Clone, Debug, Default)]
struct SymbolTally {
    /// The last trade id delivered.
    last_id: Option<i64>,
    /// The time of the first trade delivered, Unix ms: intervals before it were not watched.
    first_ms: Option<i64>,
    /// Ring of intervals, by `(open_ms / interval_ms) % INTERVALS_KEPT`.
    intervals: [Interval; INTERVALS_KEPT],
}

/// A sink's tally of delivered trades, every symbol.
#[derive(Debug)]
pub struct TradeTally {
    interval_ms: i64,
    symbols: Mutex<Vec<SymbolTally>>,
}

impl Default for TradeTally {
    fn default() -> Self {
        TradeTally::new(60_000)
    }
}

/// What the tally holds of one symbol's interval, for a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The sink's first trade of the symbol came after the interval opened (or none came):
    /// the interval was not watched whole, so it cannot be judged.
    NotWatched,
    /// The interval as delivered (zero trades when none came).
    Delivered(Interval),
}

impl TradeTally {
    /// A tally by intervals of `interval_ms` (above zero).
    pub fn new(interval_ms: i64) -> TradeTally {
        TradeTally {
            interval_ms: interval_ms.max(1),
            symbols: Mutex::new(Vec::new()),
        }
    }

    /// The interval length, ms.
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// Adds a delivered trades frame of `symbol`: its trades from id `from` on. Anything but a
    /// decodable trades frame is ignored.
    pub fn add(&self, symbol: u16, frame: &[u8], from: i64) {
        let Ok(Message::TradesStreamEvent(m)) = crate::sbe::decode(frame) else {
            return;
        };
        let time_ms = m.transact_time().div_euclid(1000);
        let exponent = m.qty_exponent();
        let mut symbols = crate::sync::lock(&self.symbols);
        let index = usize::from(symbol);
        if symbols.len() <= index {
            symbols.resize_with(index + 1, SymbolTally::default);
        }
        let tally = &mut symbols[index];
        let mut last_id = tally.last_id;
        let mut gone = Interval::default();
        let interval = slot(&mut tally.intervals, self.interval_ms, time_ms).unwrap_or(&mut gone);
        for trade in m.trades().filter(|t| t.id() >= from) {
            let id = trade.id();
            if interval.count == 0 {
                (interval.first_id, interval.last_id) = (id, id);
            } else {
                interval.first_id = interval.first_id.min(id);
                interval.last_id = interval.last_id.max(id);
            }
            interval.count += 1;
            match scale(trade.qty(), exponent) {
                Some(qty) => interval.volume = interval.volume.saturating_add(qty),
                None => interval.inexact = true,
            }
            last_id = Some(last_id.map_or(trade.id(), |l| l.max(trade.id())));
        }
        tally.last_id = last_id;
        tally.first_ms.get_or_insert(time_ms);
    }

    /// `symbol` was removed: what was delivered of it is forgotten, so that, added again, its
    /// silence probes start from what the sink delivers then (not from the id it had before,
    /// which would fetch the trades of the time it was away) and only intervals it watches
    /// whole from then on are judged.
    pub fn forget(&self, symbol: u16) {
        if let Some(tally) = crate::sync::lock(&self.symbols).get_mut(usize::from(symbol)) {
            *tally = SymbolTally::default();
        }
    }

    /// The last trade id of `symbol` delivered.
    pub fn last_id(&self, symbol: u16) -> Option<i64> {
        crate::sync::lock(&self.symbols)
            .get(usize::from(symbol))?
            .last_id
    }

    /// What was delivered of `symbol` in the interval opening at `open_ms`.
    pub fn seen(&self, symbol: u16, open_ms: i64) -> Seen {
        let symbols = crate::sync::lock(&self.symbols);
        let Some(tally) = symbols.get(usize::from(symbol)) else {
            return Seen::NotWatched;
        };
        match tally.first_ms {
            Some(first) if first < open_ms => {}
            _ => return Seen::NotWatched,
        }
        let kept = tally.intervals[slot_of(open_ms, self.interval_ms)];
        match kept.open_ms.cmp(&open_ms) {
            std::cmp::Ordering::Equal => Seen::Delivered(kept),
            // The slot was last used before: nothing was delivered in this interval.
            std::cmp::Ordering::Less => Seen::Delivered(Interval {
                open_ms,
                ..Interval::default()
            }),
            // A later interval took the slot: this one is no longer known.
            std::cmp::Ordering::Greater => Seen::NotWatched,
        }
    }
}

/// The interval of `time_ms` in a symbol's ring, emptied first if it held an older one;
/// `None` when a later interval holds its place (it is no longer kept).
fn slot(
    intervals: &mut [Interval; INTERVALS_KEPT],
    interval_ms: i64,
    time_ms: i64,
) -> Option<&mut Interval> {
    let open_ms = time_ms - time_ms.rem_euclid(interval_ms);
    let interval = &mut intervals[slot_of(open_ms, interval_ms)];
    if interval.open_ms > open_ms {
        return None;
    }
    if interval.open_ms != open_ms {
        *interval = Interval {
            open_ms,
            ..Interval::default()
        };
    }
    Some(interval)
}

fn slot_of(open_ms: i64, interval_ms: i64) -> usize {
    // rem_euclid of a positive modulus is in 0..INTERVALS_KEPT.
    usize::try_from(
        open_ms
            .div_euclid(interval_ms)
            .rem_euclid(INTERVALS_KEPT as i64),
    )
    .unwrap_or(0)
}

/// `mantissa x 10^exponent` as a mantissa at [`VOLUME_EXPONENT`]; `None` when finer.
pub fn scale(mantissa: i64, exponent: i8) -> Option<i128> {
    let shift = u32::try_from(i16::from(exponent) - i16::from(VOLUME_EXPONENT)).ok()?;
    10i128
        .checked_pow(shift)
        .and_then(|f| f.checked_mul(i128::from(mantissa)))
}

/// A decimal text (`"12.34500000"`, Binance's volumes) as a mantissa at [`VOLUME_EXPONENT`];
/// `None` when it is not a plain non-negative decimal or is finer than that.
pub fn parse_volume(text: &str) -> Option<i128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let places = usize::try_from(-i16::from(VOLUME_EXPONENT)).ok()?;
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > places {
        return None;
    }
    let mut value: i128 = 0;
    for b in whole
        .bytes()
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', places - fraction.len()))
    {
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::rest::RestTrade;

    struct Event {
        symbol: u16,
        frame: bytes::Bytes,
    }

    /// One trades frame of `ids` at `time_ms`, each trade of quantity 0.001.
    fn event(symbol: u16, ids: std::ops::RangeInclusive<i64>, time_ms: i64) -> Event {
        let page: Vec<RestTrade> = ids
            .clone()
            .map(|id| RestTrade {
                id,
                price: "1.00000000".into(),
                qty: "0.00100000".into(),
                time_ms,
                is_buyer_maker: false,
            })
            .collect();
        let mut frames = Vec::new();
        crate::sidecar::frames::page_frames("BTCUSDT", &page, &mut frames).expect("frames");
        Event {
            symbol,
            frame: frames.remove(0).frame,
        }
    }

    fn add(tally: &TradeTally, event: Event, from: i64) {
        tally.add(event.symbol, &event.frame, from);
    }

    #[test]
    fn volumes_are_exact_and_parse_like_binance_prints_them() {
        assert_eq!(parse_volume("12.34500000"), Some(12_345 * 10i128.pow(15)));
        assert_eq!(parse_volume("0"), Some(0));
        assert_eq!(parse_volume("1.0000000000000000001"), None);
        assert_eq!(parse_volume("-1"), None);
        assert_eq!(parse_volume("1e3"), None);
        assert_eq!(scale(5, -8), Some(5 * 10i128.pow(10)));
        assert_eq!(scale(5, -19), None);
    }

    #[test]
    fn delivered_trades_are_counted_by_interval_from_the_first_id_delivered() {
        let tally = TradeTally::new(60_000);
        add(&tally, event(0, 1..=3, 59_999), 1);
        // Watched from 59 999 on: the interval at 0 was not watched whole.
        assert_eq!(tally.seen(0, 0), Seen::NotWatched);
        add(&tally, event(0, 3..=5, 60_000), 4);
        add(&tally, event(0, 6..=6, 119_999), 6);
        let Seen::Delivered(minute) = tally.seen(0, 60_000) else {
            panic!("watched");
        };
        // Each test trade has quantity 0.001 (mantissa 100_000 at 10^-8).
        assert_eq!((minute.count, minute.inexact), (3, false));
        assert_eq!(
            (minute.first_id, minute.last_id),
            (4, 6),
            "ids from `from` on"
        );
        assert_eq!(minute.volume, 3 * scale(100_000, -8).unwrap_or(0));
        assert_eq!(tally.last_id(0), Some(6));
        assert_eq!(
            tally.seen(0, 120_000),
            Seen::Delivered(Interval {
                open_ms: 120_000,
                ..Interval::default()
            }),
            "a quiet interval after the first trade was watched: zero trades"
        );
        assert_eq!(tally.seen(1, 60_000), Seen::NotWatched);
        assert_eq!(tally.last_id(1), None);
    }

    /// Regression: a removed symbol's tally outlived it. Added again, its silence probe
    /// started from the id delivered before the removal (fetching the trades of the time it
    /// was away into sinks whose order had restarted), and intervals it was away for counted
    /// as watched with no trades.
    #[test]
    fn a_forgotten_symbol_is_watched_afresh() {
        let tally = TradeTally::new(60_000);
        add(&tally, event(0, 1..=3, 1_000), 1);
        add(&tally, event(1, 1..=1, 1_000), 1);
        tally.forget(0);
        tally.forget(9);
        assert_eq!(tally.last_id(0), None);
        assert_eq!(tally.seen(0, 60_000), Seen::NotWatched);
        assert_eq!(tally.last_id(1), Some(1), "other symbols are kept");
        add(&tally, event(0, 500..=500, 130_000), 500);
        assert_eq!(tally.last_id(0), Some(500));
        assert_eq!(tally.seen(0, 120_000), Seen::NotWatched, "back inside it");
        assert!(matches!(tally.seen(0, 180_000), Seen::Delivered(_)));
    }

    #[test]
    fn an_interval_slot_reused_later_starts_empty() {
        let tally = TradeTally::new(1_000);
        add(&tally, event(0, 1..=1, 500), 1);
        add(&tally, event(0, 2..=2, 1_500), 2);
        let later = 1_000 + INTERVALS_KEPT as i64 * 1_000;
        add(&tally, event(0, 3..=3, later + 10), 3);
        let Seen::Delivered(reused) = tally.seen(0, later) else {
            panic!("watched");
        };
        assert_eq!(reused.count, 1);
        assert_eq!(
            tally.seen(0, 1_000),
            Seen::NotWatched,
            "an interval no longer kept is not judged"
        );
        // A late trade of an interval no longer kept leaves the later one alone.
        add(&tally, event(0, 4..=4, 1_200), 4);
        assert_eq!(tally.seen(0, later), Seen::Delivered(reused));
        assert_eq!(tally.last_id(0), Some(4));
    }
}
