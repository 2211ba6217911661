//! Per-symbol sequence checks: the reader runs [`Sequencer::check`] on every decoded frame to
//! drop duplicates (the same event delivered by two connections during a make-before-break
//! reconnect) and to report gaps (ids lost on the wire) to the reliability sidecar. Pure and on
//! the hot path: no allocation after [`Sequencer::new`], no logging, no panics on any ids.
//!
//! State is one "last id seen" per (symbol, stream kind), starting at "nothing yet". The ids of
//! an event are `first_id ..= last_id`: the first and last trade id for `@trade`, `U` and `u`
//! (`firstBookUpdateId`, `lastBookUpdateId`) for `@depth`, and the `bookUpdateId` twice for
//! `@bestBidAsk` and `@depth20`. With `last` the last id seen:
//!
//! - **The first event of a stream** is accepted and sets `last = last_id`; nothing before it
//!   is known, so nothing before it is a gap.
//! - **Contiguous streams, `@trade` and `@depth`** (each event starts right after the previous
//!   one, `U = previous u + 1`, PROTOCOL.md 4.4):
//!   - `last_id <= last`: [`Verdict::Duplicate`], state unchanged;
//!   - `first_id > last + 1`: [`Verdict::Gap`], ids `last + 1 ..= first_id - 1` are missing;
//!     the event itself is accepted and `last = last_id`;
//!   - `first_id <= last < last_id`: the event partly overlaps what was seen; it carries new
//!     ids from `last + 1`: [`Verdict::Overlap`] with `first_new = last + 1`, and
//!     `last = last_id`. Consumers that forward events must skip the ids before `first_new`
//!     (the Kinesis writer re-encodes such a trades event with only its new trades);
//!   - otherwise (`first_id == last + 1`) [`Verdict::Accept`] and `last = last_id`.
//! - **Sampled streams, `@bestBidAsk` and `@depth20`**: Binance culls `@bestBidAsk` under load
//!   and `@depth20` samples the book every 50 ms (PROTOCOL.md 3.10), so id jumps are normal and
//!   never a gap. `last_id <= last` is a duplicate; anything newer is accepted.
//!
//! Malformed input never panics. Arithmetic saturates, so ids at `i64::MIN` or `i64::MAX` are
//! safe. An inverted range (`first_id > last_id`, which Binance never sends) is checked as the
//! single id `last_id`. `i64::MIN` is the "nothing yet" sentinel: Binance ids are positive, and
//! an event ending at `i64::MIN` is accepted and leaves the stream at "nothing yet".
//!
//! Two connections delivering the same stream, each in order, may be interleaved in any way:
//! every id is accepted exactly once and no gap is reported. This holds as long as a new
//! connection's first event is not checked before the old connection has delivered the ids
//! before it; if it is, the ids in between are reported as a gap and their late copies from
//! the old connection are duplicates (lossy, but never silent).

use std::ops::RangeInclusive;

use crate::stream::StreamKind;

/// The largest number of symbols a [`Sequencer`] tracks: symbol indices are `u16`.
pub const SYMBOLS_MAX: usize = u16::MAX as usize + 1;

/// Stream kinds per symbol: the stride of the state vector.
const KINDS: usize = StreamKind::ALL.len();

/// The "last id seen" of a stream that has seen nothing yet.
const NOTHING_YET: i64 = i64::MIN;

const _: () = assert!(
    StreamKind::Depth20 as usize == KINDS - 1,
    "`kind as usize` must index 0..KINDS"
);

/// What to do with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// New ids, contiguous with what was seen: hand the event on.
    Accept,
    /// Every id was seen already (the other connection's copy): drop the event.
    Duplicate,
    /// New ids from `first_new` on, but the event starts with ids already seen (two
    /// connections framed the same ids differently): hand the event on; its ids before
    /// `first_new` must not be delivered again.
    Overlap {
        /// The event's first id not seen before.
        first_new: i64,
    },
    /// New ids, but some before them are missing: hand the event on and report the gap.
    Gap(GapNotice),
}

impl Verdict {
    /// Whether the event goes on to consumers (every verdict but [`Verdict::Duplicate`]).
    #[inline]
    pub fn is_accepted(self) -> bool {
        !matches!(self, Verdict::Duplicate)
    }
}

/// Ids missing from one stream: `last_good + 1 ..= first_seen - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GapNotice {
    /// Index of the symbol in the configured symbol list.
    pub symbol: u16,
    /// Which stream.
    pub kind: StreamKind,
    /// The last id seen before the gap.
    pub last_good: i64,
    /// The first id of the event after the gap; `first_seen > last_good + 1`.
    pub first_seen: i64,
}

impl GapNotice {
    /// How many ids are missing, `first_seen - last_good - 1` (saturating at `i64::MAX`).
    pub fn missing(&self) -> i64 {
        let missing = i128::from(self.first_seen) - i128::from(self.last_good) - 1;
        i64::try_from(missing.max(0)).unwrap_or(i64::MAX)
    }

    /// The missing ids, `last_good + 1 ..= first_seen - 1`.
    pub fn missing_range(&self) -> RangeInclusive<i64> {
        self.last_good.saturating_add(1)..=self.first_seen.saturating_sub(1)
    }
}

/// The sequence state of every stream of every symbol.
#[derive(Clone, Debug)]
pub struct Sequencer {
    /// Last id seen per stream, at `symbol * KINDS + kind`, or [`NOTHING_YET`]. Its length is
    /// `symbols * KINDS`, fixed at creation.
    last_ids: Vec<i64>,
}

impl Sequencer {
    /// State for symbol indices `0..symbols`, every stream at "nothing yet". Cold: allocates.
    ///
    /// # Panics
    /// If `symbols > SYMBOLS_MAX`, which `u16` indices could not address.
    pub fn new(symbols: usize) -> Sequencer {
        assert!(
            symbols <= SYMBOLS_MAX,
            "{symbols} symbols, at most {SYMBOLS_MAX}"
        );
        Sequencer {
            last_ids: vec![NOTHING_YET; symbols * KINDS],
        }
    }

    /// Tracks symbol indices up to `symbols` (no-op if already), for symbols added at run time.
    /// Cold: may allocate.
    pub fn grow(&mut self, symbols: usize) {
        let symbols = symbols.min(SYMBOLS_MAX);
        if symbols * KINDS > self.last_ids.len() {
            self.last_ids.resize(symbols * KINDS, NOTHING_YET);
        }
    }

    /// How many symbols are tracked.
    pub fn symbols(&self) -> usize {
        self.last_ids.len() / KINDS
    }

    /// Checks one event with ids `first_id ..= last_id` and updates the stream's state (see the
    /// module doc for the rules). A symbol index out of range is a bug in the caller: it fails
    /// a debug assertion, and in release the event is accepted without state.
    #[inline]
    pub fn check(&mut self, symbol: u16, kind: StreamKind, first_id: i64, last_id: i64) -> Verdict {
        let index = slot(symbol, kind);
        debug_assert!(
            index < self.last_ids.len(),
            "symbol index {symbol} out of range"
        );
        let Some(last) = self.last_ids.get_mut(index) else {
            return Verdict::Accept;
        };
        match kind {
            StreamKind::Trade | StreamKind::Depth => {
                check_contiguous(last, symbol, kind, first_id, last_id)
            }
            StreamKind::BestBidAsk | StreamKind::Depth20 => check_sampled(last, last_id),
        }
    }

    /// Forgets a stream, as after a resubscribe: its next event is a first event.
    pub fn reset(&mut self, symbol: u16, kind: StreamKind) {
        let index = slot(symbol, kind);
        debug_assert!(
            index < self.last_ids.len(),
            "symbol index {symbol} out of range"
        );
        if let Some(last) = self.last_ids.get_mut(index) {
            *last = NOTHING_YET;
        }
    }

    /// The last id seen on a stream, `None` before its first event (or out of range).
    pub fn last(&self, symbol: u16, kind: StreamKind) -> Option<i64> {
        let last = *self.last_ids.get(slot(symbol, kind))?;
        (last != NOTHING_YET).then_some(last)
    }
}

/// Index of a stream in the state vector.
#[inline]
fn slot(symbol: u16, kind: StreamKind) -> usize {
    usize::from(symbol) * KINDS + kind as usize
}

/// The contiguous rule (`@trade`, `@depth`) on `last`.
#[inline]
fn check_contiguous(
    last: &mut i64,
    symbol: u16,
    kind: StreamKind,
    first_id: i64,
    last_id: i64,
) -> Verdict {
    let previous = *last;
    if previous == NOTHING_YET {
        *last = last_id;
        return Verdict::Accept;
    }
    if last_id <= previous {
        return Verdict::Duplicate;
    }
    *last = last_id;
    let first_id = first_id.min(last_id);
    if first_id <= previous {
        // `previous < last_id`, so `previous + 1` does not overflow.
        return Verdict::Overlap {
            first_new: previous.saturating_add(1),
        };
    }
    if first_id == previous.saturating_add(1) {
        return Verdict::Accept;
    }
    Verdict::Gap(GapNotice {
        symbol,
        kind,
        last_good: previous,
        first_seen: first_id,
    })
}

/// The sampled rule on `last`: only duplicates are refused.
#[inline]
fn check_sampled(last: &mut i64, id: i64) -> Verdict {
    if *last != NOTHING_YET && id <= *last {
        return Verdict::Duplicate;
    }
    *last = id;
    Verdict::Accept
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    const BTC: u16 = 0;
    const ETH: u16 = 1;
    const CONTIGUOUS: [StreamKind; 2] = [StreamKind::Trade, StreamKind::Depth];
    const SAMPLED: [StreamKind; 2] = [StreamKind::BestBidAsk, StreamKind::Depth20];

    /// A sequencer for two symbols whose `kind` stream of BTC has seen up to `last`.
    fn at(kind: StreamKind, last: i64) -> Sequencer {
        let mut sequencer = Sequencer::new(2);
        assert_eq!(sequencer.check(BTC, kind, last, last), Verdict::Accept);
        sequencer
    }

    fn gap(kind: StreamKind, last_good: i64, first_seen: i64) -> Verdict {
        let (symbol, kind) = (BTC, kind);
        Verdict::Gap(GapNotice {
            symbol,
            kind,
            last_good,
            first_seen,
        })
    }

    #[test]
    fn the_first_event_of_every_stream_is_accepted() {
        let mut sequencer = Sequencer::new(2);
        for symbol in [BTC, ETH] {
            for kind in StreamKind::ALL {
                assert_eq!(sequencer.last(symbol, kind), None);
                assert_eq!(sequencer.check(symbol, kind, 500, 510), Verdict::Accept);
                assert_eq!(sequencer.last(symbol, kind), Some(510));
            }
        }
    }

    #[test]
    fn contiguous_events_are_accepted() {
        for kind in CONTIGUOUS {
            let mut sequencer = at(kind, 10);
            assert_eq!(sequencer.check(BTC, kind, 11, 11), Verdict::Accept);
            assert_eq!(sequencer.check(BTC, kind, 12, 20), Verdict::Accept);
            assert_eq!(sequencer.last(BTC, kind), Some(20));
        }
    }

    #[test]
    fn duplicates_leave_the_state_unchanged() {
        for kind in StreamKind::ALL {
            let mut sequencer = at(kind, 10);
            assert_eq!(sequencer.check(BTC, kind, 10, 10), Verdict::Duplicate);
            assert_eq!(sequencer.check(BTC, kind, 3, 3), Verdict::Duplicate);
            assert_eq!(sequencer.last(BTC, kind), Some(10));
        }
        let mut sequencer = at(StreamKind::Depth, 10);
        assert_eq!(
            sequencer.check(BTC, StreamKind::Depth, 4, 10),
            Verdict::Duplicate
        );
        assert_eq!(
            sequencer.check(BTC, StreamKind::Depth, 1, 7),
            Verdict::Duplicate
        );
        assert_eq!(sequencer.last(BTC, StreamKind::Depth), Some(10));
    }

    #[test]
    fn a_gap_is_accepted_and_reports_the_exact_missing_range() {
        for kind in CONTIGUOUS {
            let mut sequencer = at(kind, 10);
            let verdict = sequencer.check(BTC, kind, 15, 20);
            assert_eq!(verdict, gap(kind, 10, 15));
            assert!(verdict.is_accepted());
            let Verdict::Gap(notice) = verdict else {
                unreachable!()
            };
            assert_eq!(notice.missing(), 4);
            assert_eq!(notice.missing_range(), 11..=14);
            assert_eq!(sequencer.last(BTC, kind), Some(20));
            assert_eq!(sequencer.check(BTC, kind, 21, 21), Verdict::Accept);
            assert_eq!(sequencer.check(BTC, kind, 23, 23), gap(kind, 21, 23));
        }
    }

    #[test]
    fn a_partly_overlapping_event_is_accepted() {
        for kind in CONTIGUOUS {
            let mut sequencer = at(kind, 10);
            let verdict = sequencer.check(BTC, kind, 5, 15);
            assert_eq!(verdict, Verdict::Overlap { first_new: 11 });
            assert!(verdict.is_accepted());
            assert_eq!(sequencer.last(BTC, kind), Some(15));
            assert_eq!(
                sequencer.check(BTC, kind, 15, 16),
                Verdict::Overlap { first_new: 16 }
            );
            assert_eq!(sequencer.check(BTC, kind, 17, 17), Verdict::Accept);
            assert_eq!(
                sequencer.check(BTC, kind, i64::MIN + 1, i64::MAX),
                Verdict::Overlap { first_new: 18 },
                "no overflow at the extremes"
            );
        }
    }

    #[test]
    fn sampled_streams_skip_ids_without_a_gap() {
        for kind in SAMPLED {
            let mut sequencer = at(kind, 10);
            assert_eq!(sequencer.check(BTC, kind, 1_000, 1_000), Verdict::Accept);
            assert_eq!(sequencer.check(BTC, kind, 1_000, 1_000), Verdict::Duplicate);
            assert_eq!(sequencer.check(BTC, kind, 500, 500), Verdict::Duplicate);
            assert_eq!(sequencer.check(BTC, kind, 1_001, 1_001), Verdict::Accept);
            assert_eq!(sequencer.last(BTC, kind), Some(1_001));
        }
    }

    #[test]
    fn streams_and_symbols_are_independent() {
        let mut sequencer = at(StreamKind::Trade, 100);
        assert_eq!(
            sequencer.check(ETH, StreamKind::Trade, 5, 5),
            Verdict::Accept
        );
        assert_eq!(
            sequencer.check(BTC, StreamKind::Depth, 7, 9),
            Verdict::Accept
        );
        assert_eq!(sequencer.last(BTC, StreamKind::Trade), Some(100));
        assert_eq!(sequencer.last(ETH, StreamKind::Trade), Some(5));
        assert_eq!(sequencer.last(ETH, StreamKind::Depth), None);
    }

    #[test]
    fn reset_forgets_one_stream() {
        let mut sequencer = at(StreamKind::Depth, 100);
        assert_eq!(
            sequencer.check(BTC, StreamKind::Trade, 7, 7),
            Verdict::Accept
        );
        sequencer.reset(BTC, StreamKind::Depth);
        assert_eq!(sequencer.last(BTC, StreamKind::Depth), None);
        assert_eq!(sequencer.last(BTC, StreamKind::Trade), Some(7));
        assert_eq!(
            sequencer.check(BTC, StreamKind::Depth, 50, 60),
            Verdict::Accept
        );
        assert_eq!(
            sequencer.check(BTC, StreamKind::Depth, 62, 62),
            gap(StreamKind::Depth, 60, 62)
        );
    }

    #[test]
    fn extreme_ids_never_overflow() {
        let (min, max) = (i64::MIN, i64::MAX);
        for kind in StreamKind::ALL {
            let mut sequencer = Sequencer::new(1);
            assert_eq!(sequencer.check(BTC, kind, min, max), Verdict::Accept);
            assert_eq!(sequencer.check(BTC, kind, max, max), Verdict::Duplicate);
            assert_eq!(sequencer.check(BTC, kind, min, min), Verdict::Duplicate);
            assert_eq!(sequencer.last(BTC, kind), Some(max));
        }
        let mut sequencer = at(StreamKind::Trade, min + 1);
        let verdict = sequencer.check(BTC, StreamKind::Trade, max, max);
        assert_eq!(verdict, gap(StreamKind::Trade, min + 1, max));
        let Verdict::Gap(notice) = verdict else {
            unreachable!()
        };
        assert_eq!(notice.missing(), max);
        assert_eq!(notice.missing_range(), min + 2..=max - 1);
    }

    #[test]
    fn an_inverted_range_is_checked_as_its_last_id() {
        let mut sequencer = at(StreamKind::Depth, 10);
        assert_eq!(
            sequencer.check(BTC, StreamKind::Depth, 30, 11),
            Verdict::Accept
        );
        assert_eq!(
            sequencer.check(BTC, StreamKind::Depth, 30, 20),
            gap(StreamKind::Depth, 11, 20)
        );
        assert_eq!(
            sequencer.check(BTC, StreamKind::Depth, 90, 20),
            Verdict::Duplicate
        );
        assert_eq!(sequencer.last(BTC, StreamKind::Depth), Some(20));
    }

    #[test]
    fn an_event_ending_at_the_sentinel_leaves_nothing_seen() {
        let mut sequencer = Sequencer::new(1);
        assert_eq!(
            sequencer.check(BTC, StreamKind::Trade, i64::MIN, i64::MIN),
            Verdict::Accept
        );
        assert_eq!(sequencer.last(BTC, StreamKind::Trade), None);
        assert_eq!(
            sequencer.check(BTC, StreamKind::Trade, 5, 5),
            Verdict::Accept
        );
    }

    #[test]
    fn every_u16_symbol_index_fits() {
        let mut sequencer = Sequencer::new(SYMBOLS_MAX);
        assert_eq!(sequencer.symbols(), SYMBOLS_MAX);
        assert_eq!(
            sequencer.check(u16::MAX, StreamKind::Depth20, 1, 1),
            Verdict::Accept
        );
        assert_eq!(sequencer.last(u16::MAX, StreamKind::Depth20), Some(1));
    }

    #[test]
    #[should_panic(expected = "at most 65536")]
    fn more_symbols_than_u16_indices_are_refused() {
        let _ = Sequencer::new(SYMBOLS_MAX + 1);
    }

    #[test]
    #[cfg_attr(
        debug_assertions,
        should_panic(expected = "symbol index 2 out of range")
    )]
    fn an_out_of_range_symbol_is_accepted_without_state() {
        let mut sequencer = Sequencer::new(2);
        assert_eq!(sequencer.last(2, StreamKind::Trade), None);
        for _ in 0..2 {
            assert_eq!(sequencer.check(2, StreamKind::Trade, 1, 1), Verdict::Accept);
        }
        sequencer.reset(2, StreamKind::Trade);
    }

    /// Events `(first_id, last_id)` of consecutive ids from `start`, with the given sizes.
    fn consecutive(start: i64, sizes: &[i64]) -> Vec<(i64, i64)> {
        let mut next = start;
        let mut events = Vec::with_capacity(sizes.len());
        for &size in sizes {
            events.push((next, next + size - 1));
            next += size;
        }
        events
    }

    /// Feeds `order` (indices into `events`) to a fresh sequencer; returns the accepted ids in
    /// order and the missing ranges of the gaps reported.
    fn run(
        kind: StreamKind,
        events: &[(i64, i64)],
        order: impl IntoIterator<Item = usize>,
    ) -> (Vec<i64>, Vec<RangeInclusive<i64>>) {
        let mut sequencer = Sequencer::new(1);
        let (mut accepted, mut gaps) = (Vec::new(), Vec::new());
        for index in order {
            let (first_id, last_id) = events[index];
            let verdict = sequencer.check(BTC, kind, first_id, last_id);
            match verdict {
                Verdict::Gap(notice) => {
                    gaps.push(notice.missing_range());
                    accepted.extend(first_id..=last_id);
                }
                Verdict::Overlap { first_new } => accepted.extend(first_new..=last_id),
                Verdict::Accept => accepted.extend(first_id..=last_id),
                Verdict::Duplicate => {}
            }
        }
        (accepted, gaps)
    }

    /// Merges two sequences, taking from `a` where `take_a` says so while both have events.
    fn interleave(a: &[usize], b: &[usize], take_a: impl Fn(usize) -> bool) -> Vec<usize> {
        let (mut i, mut j, mut merged) = (0, 0, Vec::with_capacity(a.len() + b.len()));
        while i < a.len() || j < b.len() {
            if j == b.len() || (i < a.len() && take_a(i + j)) {
                merged.push(a[i]);
                i += 1;
            } else {
                merged.push(b[j]);
                j += 1;
            }
        }
        merged
    }

    #[test]
    fn make_before_break_in_any_interleaving_accepts_each_id_once() {
        const EVENTS: usize = 6;
        let events = consecutive(1_000, &[1, 3, 1, 2, 5, 1]);
        let all_ids: Vec<i64> = (1_000..1_013).collect();
        let copy: Vec<usize> = (0..EVENTS).collect();
        for kind in CONTIGUOUS {
            // Every choice mask of 2 * EVENTS bits, so every interleaving of the two copies.
            for mask in 0u32..1 << (2 * EVENTS) {
                let order = interleave(&copy, &copy, |step| mask & (1 << step) != 0);
                let (accepted, gaps) = run(kind, &events, order);
                assert_eq!(gaps, [], "{kind:?} mask {mask:#b}");
                assert_eq!(accepted, all_ids, "{kind:?} mask {mask:#b}");
            }
        }
    }

    /// Maximal runs of dropped ids strictly between the first and last delivered event.
    fn interior_drops(events: &[(i64, i64)], dropped: &[bool]) -> Vec<RangeInclusive<i64>> {
        let delivered: Vec<usize> = (0..events.len()).filter(|&i| !dropped[i]).collect();
        let mut runs = Vec::new();
        for pair in delivered.windows(2) {
            if pair[1] > pair[0] + 1 {
                runs.push(events[pair[0]].1 + 1..=events[pair[1]].0 - 1);
            }
        }
        runs
    }

    proptest! {
        /// Make-before-break with losses: the old connection delivers events `0..a_end`, the new
        /// one `b_start..` (`b_start <= a_end`, so they overlap), both lose the same events, and
        /// the new connection's events reach the check only once the old one has delivered
        /// everything before `b_start`; after that the two interleave freely.
        #[test]
        fn two_lossy_overlapping_connections_report_exactly_the_ids_both_lost(
            start in 1i64..1_000_000_000_000,
            sizes in proptest::collection::vec(1i64..5, 1..40),
            drops in proptest::collection::vec(proptest::bool::weighted(0.2), 40),
            choices in proptest::collection::vec(any::<bool>(), 80),
            a_end in any::<Index>(),
            b_start in any::<Index>(),
            depth in any::<bool>(),
        ) {
            let kind = if depth { StreamKind::Depth } else { StreamKind::Trade };
            let events = consecutive(start, &sizes);
            let dropped = &drops[..events.len()];
            let a_end = 1 + a_end.index(events.len());
            let b_start = b_start.index(a_end + 1);
            let kept = |range: std::ops::Range<usize>| -> Vec<usize> {
                range.filter(|&i| !dropped[i]).collect()
            };
            let mut order = kept(0..b_start);
            order.extend(interleave(&kept(b_start..a_end), &kept(b_start..events.len()), |step| {
                choices[step]
            }));
            let (accepted, gaps) = run(kind, &events, order);
            let expected: Vec<i64> = kept(0..events.len())
                .into_iter()
                .flat_map(|i| events[i].0..=events[i].1)
                .collect();
            prop_assert_eq!(accepted, expected);
            prop_assert_eq!(gaps, interior_drops(&events, dropped));
        }

        /// Whatever ids arrive, nothing panics, a gap is at least one id wide, and the last id
        /// seen of a contiguous stream never decreases.
        #[test]
        fn arbitrary_ids_keep_the_invariants(
            events in proptest::collection::vec((0usize..4, any::<i64>(), any::<i64>()), 0..60),
        ) {
            let mut sequencer = Sequencer::new(1);
            for (kind, first_id, last_id) in events {
                let kind = StreamKind::ALL[kind];
                let before = sequencer.last(BTC, kind);
                let verdict = sequencer.check(BTC, kind, first_id, last_id);
                let after = sequencer.last(BTC, kind);
                if let Verdict::Gap(notice) = verdict {
                    prop_assert!(CONTIGUOUS.contains(&kind));
                    prop_assert!(notice.missing() >= 1);
                    prop_assert_eq!(Some(notice.last_good), before);
                }
                if verdict == Verdict::Duplicate {
                    prop_assert_eq!(after, before);
                }
                if let Verdict::Overlap { first_new } = verdict {
                    prop_assert!(CONTIGUOUS.contains(&kind));
                    let before = before.expect("an overlap follows an event");
                    prop_assert_eq!(first_new, before + 1);
                    prop_assert!(first_id.min(last_id) <= before && before < last_id);
                }
                if let (Some(before), Some(after)) = (before, after) {
                    prop_assert!(after >= before);
                }
            }
        }
    }
}
