//! A local order book kept from a REST snapshot and depth diffs, by Binance's procedure
//! ("How to manage a local order book correctly", PROTOCOL.md section 4.4). Pure: levels in,
//! a verdict out.
//!
//! The rules, with `U`/`u` the first and last update ids of a diff (SBE `firstBookUpdateId` /
//! `lastBookUpdateId`):
//! - a diff with `u <= book id` is old: ignored;
//! - a diff with `U > book id + 1` means diffs were missed: a gap, the book must be rebuilt;
//! - otherwise each level is set (quantity 0 removes it) and the book id becomes `u`.
//!
//! When syncing, the first diff applied after the snapshot must straddle it
//! (`U <= lastUpdateId + 1 <= u`); [`LocalBook::apply_diff`] enforces exactly that as the gap
//! rule above, since diffs entirely before the snapshot are ignored.
//!
//! A snapshot's `lastUpdateId` must leave room for a following update: a negative one or
//! `i64::MAX` (which no diff could ever follow, so the book would silently never change again)
//! is refused with [`SnapshotError`].
//!
//! # The snapshot's edge
//!
//! A REST snapshot holds at most `limit` levels per side. A side that came back full may go on
//! beyond its last level, the **edge** (the lowest bid, the highest ask of the snapshot): levels
//! past the edge that never change again are never seen, while diffs may add others there. So
//! inside the edge (prices at or better than it) the book is complete; past it, it is not. The
//! top `n` levels of a side are exact only when all `n` lie inside the edge, which
//! [`LocalBook::covers_top`] tells; a side that came back with fewer than `limit` levels was
//! the whole side and has no edge. [`LocalBook::from_snapshot`] takes a snapshot as complete;
//! [`LocalBook::from_partial_snapshot`] gives each full side its edge.

use std::collections::BTreeMap;
use std::fmt;

/// Why a snapshot cannot start a book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotError {
    /// The snapshot's `lastUpdateId`.
    pub last_update_id: i64,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "depth snapshot lastUpdateId {} is out of range: it must be within 0..={} so that \
             a following update id exists",
            self.last_update_id,
            i64::MAX - 1
        )
    }
}

impl std::error::Error for SnapshotError {}

/// The verdict on one diff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffOutcome {
    /// Applied; the book is now at the diff's `u`.
    Applied,
    /// Entirely at or before the book's update id: nothing to do.
    Stale,
    /// Diffs between the book and this one are missing: the book is no longer valid.
    Gap {
        /// The update id the next diff had to cover.
        expected: i64,
        /// The diff's first update id.
        first: i64,
    },
}

/// An order book at one exchange update id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalBook {
    update_id: i64,
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
    /// The lowest bid of a snapshot side that came back full (`None`: the whole side).
    bid_edge: Option<i64>,
    /// The highest ask of a snapshot side that came back full (`None`: the whole side).
    ask_edge: Option<i64>,
}

impl LocalBook {
    /// A book set to a snapshot taken at `last_update_id`; refused when `last_update_id` is
    /// negative or `i64::MAX` (see the module documentation).
    pub fn from_snapshot(
        last_update_id: i64,
        bids: impl IntoIterator<Item = (i64, i64)>,
        asks: impl IntoIterator<Item = (i64, i64)>,
    ) -> Result<LocalBook, SnapshotError> {
        if !(0..i64::MAX).contains(&last_update_id) {
            return Err(SnapshotError { last_update_id });
        }
        let keep = |(_, qty): &(i64, i64)| *qty != 0;
        Ok(LocalBook {
            update_id: last_update_id,
            bids: bids.into_iter().filter(keep).collect(),
            asks: asks.into_iter().filter(keep).collect(),
            bid_edge: None,
            ask_edge: None,
        })
    }

    /// A book set to a snapshot fetched with `limit` levels per side: a side that holds
    /// `limit` levels (or more) may go on beyond them, so its worst level is its edge (see the
    /// module documentation). Refused like [`LocalBook::from_snapshot`].
    pub fn from_partial_snapshot(
        last_update_id: i64,
        bids: impl IntoIterator<Item = (i64, i64)>,
        asks: impl IntoIterator<Item = (i64, i64)>,
        limit: usize,
    ) -> Result<LocalBook, SnapshotError> {
        let mut book = LocalBook::from_snapshot(last_update_id, bids, asks)?;
        if book.bids.len() >= limit {
            book.bid_edge = book.bids.keys().next().copied();
        }
        if book.asks.len() >= limit {
            book.ask_edge = book.asks.keys().next_back().copied();
        }
        Ok(book)
    }

    /// Whether the top `levels` of both sides are exact: each side either came whole in the
    /// snapshot, or holds at least `levels` levels at or inside its edge. When this is false,
    /// the top `levels` would show a level past the edge (or too few levels), and the book must
    /// be synced again from a deeper or newer snapshot.
    pub fn covers_top(&self, levels: usize) -> bool {
        // The `levels`-th best level decides: every better one is inside the edge if it is.
        let nth = levels.checked_sub(1);
        let bids_covered = match (self.bid_edge, nth) {
            (None, _) | (_, None) => true,
            (Some(edge), Some(nth)) => self.bids.keys().rev().nth(nth).is_some_and(|&p| p >= edge),
        };
        let asks_covered = match (self.ask_edge, nth) {
            (None, _) | (_, None) => true,
            (Some(edge), Some(nth)) => self.asks.keys().nth(nth).is_some_and(|&p| p <= edge),
        };
        bids_covered && asks_covered
    }

    /// The update id the book is at.
    pub fn update_id(&self) -> i64 {
        self.update_id
    }

    /// Applies a diff `[first, last]` per the procedure above.
    pub fn apply_diff(
        &mut self,
        first: i64,
        last: i64,
        bids: impl IntoIterator<Item = (i64, i64)>,
        asks: impl IntoIterator<Item = (i64, i64)>,
    ) -> DiffOutcome {
        if last <= self.update_id {
            return DiffOutcome::Stale;
        }
        // `last > update_id`, so `update_id < i64::MAX` and the sum cannot overflow.
        let expected = self.update_id.saturating_add(1);
        if first > expected {
            return DiffOutcome::Gap { expected, first };
        }
        // Each level in place: nothing is collected (no allocation beyond the map's own).
        let set = |side: &mut BTreeMap<i64, i64>, (price, qty): (i64, i64)| {
            if qty == 0 {
                side.remove(&price);
            } else {
                side.insert(price, qty);
            }
        };
        for level in bids {
            set(&mut self.bids, level);
        }
        for level in asks {
            set(&mut self.asks, level);
        }
        self.update_id = last;
        DiffOutcome::Applied
    }

    /// Up to `limit` bids, highest first.
    pub fn bids(&self, limit: usize) -> Vec<(i64, i64)> {
        self.bids
            .iter()
            .rev()
            .take(limit)
            .map(|(&p, &q)| (p, q))
            .collect()
    }

    /// Up to `limit` asks, lowest first.
    pub fn asks(&self, limit: usize) -> Vec<(i64, i64)> {
        self.asks
            .iter()
            .take(limit)
            .map(|(&p, &q)| (p, q))
            .collect()
    }

    /// Sets `bids` and `asks` to the top `limit` levels of each side (best first), reusing
    /// their memory.
    pub fn top_into(&self, limit: usize, bids: &mut Vec<(i64, i64)>, asks: &mut Vec<(i64, i64)>) {
        bids.clear();
        bids.extend(self.bids.iter().rev().take(limit).map(|(&p, &q)| (p, q)));
        asks.clear();
        asks.extend(self.asks.iter().take(limit).map(|(&p, &q)| (p, q)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_applied_and_gap() {
        let mut book =
            LocalBook::from_snapshot(100, [(10, 1), (9, 2)], [(11, 3)]).expect("a valid snapshot");
        assert_eq!(book.apply_diff(90, 100, [(10, 0)], []), DiffOutcome::Stale);
        assert_eq!(
            book.apply_diff(95, 103, [(10, 0), (8, 4)], [(12, 1)]),
            DiffOutcome::Applied
        );
        assert_eq!(book.update_id(), 103);
        assert_eq!(book.bids(10), [(9, 2), (8, 4)]);
        assert_eq!(book.asks(1), [(11, 3)]);
        assert_eq!(book.apply_diff(104, 104, [], []), DiffOutcome::Applied);
        assert_eq!(
            book.apply_diff(106, 107, [], []),
            DiffOutcome::Gap {
                expected: 105,
                first: 106
            }
        );
        assert_eq!(book.update_id(), 104, "a gap changes nothing");
    }

    /// Regression (found in review): `update_id + 1` overflowed on a hostile
    /// `lastUpdateId = i64::MAX`, and such a book could never apply a diff again.
    #[test]
    fn a_snapshot_at_i64_max_or_negative_is_refused() {
        for id in [i64::MAX, -1, i64::MIN] {
            let refused = LocalBook::from_snapshot(id, [(10, 1)], [(11, 1)]);
            assert_eq!(refused, Err(SnapshotError { last_update_id: id }));
            let message = SnapshotError { last_update_id: id }.to_string();
            assert!(message.contains(&id.to_string()), "{message}");
        }
        let mut book =
            LocalBook::from_snapshot(i64::MAX - 1, [], []).expect("the largest valid id");
        assert_eq!(
            book.apply_diff(i64::MAX, i64::MAX, [(5, 5)], []),
            DiffOutcome::Applied
        );
        assert_eq!(book.update_id(), i64::MAX);
        assert_eq!(
            book.apply_diff(i64::MAX, i64::MAX, [], []),
            DiffOutcome::Stale,
            "nothing follows i64::MAX, and nothing overflows"
        );
        assert!(LocalBook::from_snapshot(0, [], []).is_ok());
    }

    /// Bids 10, 9, 8 and asks 11, 12, 13 from a snapshot of limit 3: both sides came back
    /// full, so their edges are bid 8 and ask 13.
    fn partial() -> LocalBook {
        LocalBook::from_partial_snapshot(
            100,
            [(10, 1), (9, 1), (8, 1)],
            [(11, 1), (12, 1), (13, 1)],
            3,
        )
        .expect("a valid snapshot")
    }

    #[test]
    fn the_top_inside_the_snapshots_edge_is_covered() {
        let book = partial();
        for levels in 0..=3 {
            assert!(
                book.covers_top(levels),
                "{levels} levels lie inside the edges"
            );
        }
        assert!(
            !book.covers_top(4),
            "a fourth level would lie past the edge"
        );
    }

    #[test]
    fn a_level_removed_inside_the_edge_uncovers_the_top() {
        let mut book = partial();
        // The best bid goes: the top 3 bids would now reach past the edge at 8.
        assert_eq!(
            book.apply_diff(101, 101, [(10, 0)], []),
            DiffOutcome::Applied
        );
        assert!(book.covers_top(2));
        assert!(!book.covers_top(3));
        // A diff adding a level past the edge does not cover it: what lies between is unknown.
        assert_eq!(
            book.apply_diff(102, 102, [(7, 5)], []),
            DiffOutcome::Applied
        );
        assert_eq!(book.bids(3), [(9, 1), (8, 1), (7, 5)]);
        assert!(!book.covers_top(3), "bid 7 lies past the edge");
        // A new level inside the edge covers it again.
        assert_eq!(
            book.apply_diff(103, 103, [(11, 0)], [(14, 2)]),
            DiffOutcome::Applied
        );
        assert!(
            !book.covers_top(3),
            "asks now reach 14, past the ask edge 13"
        );
        assert_eq!(
            book.apply_diff(104, 104, [(9, 0), (10, 2), (9, 3)], [(11, 1)]),
            DiffOutcome::Applied
        );
        assert!(book.covers_top(3));
    }

    #[test]
    fn a_market_moving_past_the_edge_uncovers_the_top() {
        let mut book = partial();
        // The asks are lifted up to 12 and new asks come in above: the top 3 asks are 13, 14, 15.
        assert_eq!(
            book.apply_diff(101, 101, [], [(11, 0), (12, 0), (14, 1), (15, 1)]),
            DiffOutcome::Applied
        );
        assert_eq!(book.asks(3), [(13, 1), (14, 1), (15, 1)]);
        assert!(book.covers_top(1));
        assert!(!book.covers_top(2));
    }

    #[test]
    fn a_side_that_came_back_short_has_no_edge() {
        // Two bids for a limit of 3: the whole side. Three asks: full, edge at 13.
        let mut book = LocalBook::from_partial_snapshot(
            100,
            [(10, 1), (9, 1)],
            [(11, 1), (12, 1), (13, 1)],
            3,
        )
        .expect("a valid snapshot");
        assert_eq!(
            book.apply_diff(101, 101, [(10, 0), (9, 0), (5, 1)], []),
            DiffOutcome::Applied
        );
        assert!(
            book.covers_top(3),
            "bids came whole, asks are inside their edge"
        );
        assert!(book.covers_top(0));
        assert_eq!(book.bids(3), [(5, 1)]);
        // An empty side of a full snapshot is uncovered: levels may exist past its edge.
        let mut full = partial();
        assert_eq!(
            full.apply_diff(101, 101, [(10, 0), (9, 0), (8, 0)], []),
            DiffOutcome::Applied
        );
        assert!(!full.covers_top(1));
        // A complete snapshot never has an edge.
        let whole = LocalBook::from_snapshot(1, [(1, 1)], [(2, 1)]).expect("valid");
        assert!(whole.covers_top(5000));
    }
}
