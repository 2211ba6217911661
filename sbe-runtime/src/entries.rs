//! The walk over a fixed-size repeating group's entries, which generated group iterators wrap.
//!
//! A group whose frame carries the schema's block length `N` (the usual case) is sliced once,
//! when the frame is validated, into `&[[u8; N]]`: each step is a length test and the entry's
//! fields are constant-offset loads, as the reference implementation's flyweights advance by a
//! known block length. A frame of another schema version walks its span by the acting block
//! length instead.
//!
//! Which of the two walks applies is a flag set once and never changed while iterating, so
//! that after inlining the optimiser can split a consumer's `for` loop in two (loop
//! unswitching) and the array walk becomes a plain counted loop over a slice, which it can
//! unroll and vectorise. A walk that tested "arrays left?" first and fell through to the other
//! walk when they ran out would leave two exits in every loop and defeat both.

/// The entries of a validated fixed-size group, each `block_length` bytes, of which the first
/// `N` (the schema's block length) are the ones this schema reads. `N` is at least 1.
#[derive(Clone, Copy, Debug)]
pub struct FixedEntries<'a, const N: usize> {
    /// The entries not yet read when `strided` is false.
    arrays: &'a [[u8; N]],
    /// The entries not yet read when `strided` is true: `left` entries of `block_length`.
    rest: &'a [u8],
    block_length: usize,
    left: usize,
    /// Whether the frame's block length differs from `N`. Never changes after `new`.
    strided: bool,
}

impl<'a, const N: usize> FixedEntries<'a, N> {
    /// No entries.
    pub const EMPTY: Self = FixedEntries {
        arrays: &[],
        rest: &[],
        block_length: N,
        left: 0,
        strided: false,
    };

    /// The entries of the schema's block length `N` in `span`, which validation proved to hold
    /// exactly them.
    #[inline(always)]
    pub fn arrays(span: &'a [u8]) -> Self {
        FixedEntries {
            arrays: span.as_chunks::<N>().0,
            ..Self::EMPTY
        }
    }

    /// The `count` entries of `block_length` bytes in `span`, which validation proved to hold
    /// exactly `count x block_length` bytes. A span shorter than that yields fewer entries,
    /// never a panic.
    #[inline(always)]
    pub fn new(span: &'a [u8], block_length: usize, count: usize) -> Self {
        if block_length == N {
            return Self::arrays(span);
        }
        FixedEntries {
            arrays: &[],
            rest: span,
            block_length,
            left: count,
            strided: true,
        }
    }

    /// The next entry's bytes (`N` or, for frames of another version, the acting block
    /// length), passed through `entry`; `None` at the end.
    #[inline(always)]
    pub fn next_with<T>(&mut self, entry: impl FnOnce(&'a [u8]) -> Option<T>) -> Option<T> {
        if !self.strided {
            let (first, others) = self.arrays.split_first()?;
            self.arrays = others;
            return entry(first);
        }
        if self.left == 0 {
            return None;
        }
        let (first, rest) = self.rest.split_at_checked(self.block_length)?;
        self.rest = rest;
        self.left -= 1;
        entry(first)
    }

    /// How many entries are left.
    #[inline(always)]
    pub fn len(&self) -> usize {
        if self.strided {
            self.left
        } else {
            self.arrays.len()
        }
    }

    /// Whether no entry is left.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect<const N: usize>(mut entries: FixedEntries<'_, N>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(entry) = entries.next_with(|e| Some(e.to_vec())) {
            out.push(entry);
        }
        out
    }

    #[test]
    fn the_schemas_block_length_walks_as_arrays() {
        let span = [1u8, 2, 3, 4, 5, 6];
        let entries = FixedEntries::<2>::new(&span, 2, 3);
        assert_eq!(entries.len(), 3);
        assert_eq!(collect(entries), [vec![1, 2], vec![3, 4], vec![5, 6]]);
    }

    #[test]
    fn another_block_length_walks_by_that_length() {
        let span = [1u8, 2, 3, 4, 5, 6];
        let entries = FixedEntries::<2>::new(&span, 3, 2);
        assert_eq!(entries.len(), 2);
        assert_eq!(collect(entries), [vec![1, 2, 3], vec![4, 5, 6]]);
    }

    #[test]
    fn a_short_span_ends_early_without_panicking() {
        let span = [1u8, 2, 3, 4];
        assert_eq!(collect(FixedEntries::<3>::new(&span, 3, 2)).len(), 1);
        assert_eq!(collect(FixedEntries::<2>::new(&span, 3, 5)).len(), 1);
        assert!(FixedEntries::<2>::EMPTY.is_empty());
        assert!(collect(FixedEntries::<2>::EMPTY).is_empty());
    }
}
