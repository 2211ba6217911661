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

use std::collections::BTreeMap;

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
}

impl LocalBook {
    /// A book set to a snapshot taken at `last_update_id`.
    pub fn from_snapshot(
        last_update_id: i64,
        bids: impl IntoIterator<Item = (i64, i64)>,
        asks: impl IntoIterator<Item = (i64, i64)>,
    ) -> LocalBook {
        let keep = |(_, qty): &(i64, i64)| *qty != 0;
        LocalBook {
            update_id: last_update_id,
            bids: bids.into_iter().filter(keep).collect(),
            asks: asks.into_iter().filter(keep).collect(),
        }
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
        let expected = self.update_id + 1;
        if first > expected {
            return DiffOutcome::Gap { expected, first };
        }
        for (side, levels) in [
            (&mut self.bids, bids.into_iter().collect::<Vec<_>>()),
            (&mut self.asks, asks.into_iter().collect()),
        ] {
            for (price, qty) in levels {
                if qty == 0 {
                    side.remove(&price);
                } else {
                    side.insert(price, qty);
                }
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_applied_and_gap() {
        let mut book = LocalBook::from_snapshot(100, [(10, 1), (9, 2)], [(11, 3)]);
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
}
