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
        })
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
}
