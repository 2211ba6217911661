//! Trade order per symbol inside one sink, pure: live trade events and trades backfilled by the
//! sidecar merge into one sequence, in trade-id order and exactly once.
//!
//! A sink sees a symbol's trades as events covering id ranges `first..=last`. While ids arrive
//! contiguously every event is delivered at once. When an event starts past the next expected
//! id (a wire gap, or events this sink's full ring lost), the ids in between are missing: the
//! event and every later one of the symbol are **held** until the missing ids arrive (the
//! sidecar fetches them from REST and sends them through the sink's repair ring, through the
//! same [`TradeOrder::offer`]), then released in order. A repair never duplicates what was
//! delivered: an event wholly before the next expected id is a duplicate, one that straddles it
//! is delivered from the next expected id on (the sink trims it).
//!
//! Holding is bounded: by time (`hold_max_ns`, after which the sink gives up on the missing ids,
//! counts them as unrepaired and releases what it holds) and by count (`held_max` events). A
//! stream that must never wait (no sidecar) uses a zero hold: gaps are passed over at once.
//!
//! Time is an argument (monotonic nanoseconds); nothing here reads a clock or allocates per
//! event beyond the held queue, which is allocated once with `held_max` slots.

use std::collections::VecDeque;

/// What to do with an offered event, and what it released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver the event now, from trade id `from` on (`from > first` when its start was
    /// delivered already); then call [`TradeOrder::release`] for held events it unblocked.
    Deliver {
        /// The first id of the event to deliver.
        from: i64,
    },
    /// The event is held: ids before it are missing. It comes back from
    /// [`TradeOrder::release`] or [`TradeOrder::expire`].
    Held,
    /// Every id of the event was delivered already: drop it.
    Duplicate,
}

/// Ids given up on: they never arrived within the hold bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unrepaired {
    /// First missing id.
    pub from: i64,
    /// Last missing id.
    pub to: i64,
}

impl Unrepaired {
    /// How many ids.
    pub fn count(&self) -> u64 {
        u64::try_from(i128::from(self.to) - i128::from(self.from) + 1).unwrap_or(0)
    }
}

/// One held event: its ids and the sink's own handle for it.
#[derive(Debug)]
struct Held<T> {
    first: i64,
    last: i64,
    item: T,
}

/// The order of one symbol's trades in one sink.
#[derive(Debug)]
pub struct TradeOrder<T> {
    /// The next trade id to deliver; `None` until the first event.
    next: Option<i64>,
    /// Held events, sorted by `first`; never more than `held_max`.
    held: VecDeque<Held<T>>,
    /// When the oldest unrepaired gap opened, monotonic ns; `Some` exactly when `held` is not
    /// empty.
    waiting_since_ns: Option<u64>,
    hold_max_ns: u64,
    held_max: usize,
}

impl<T> TradeOrder<T> {
    /// An order that holds at most `held_max` events for at most `hold_max_ns` after a gap.
    pub fn new(hold_max_ns: u64, held_max: usize) -> TradeOrder<T> {
        TradeOrder {
            next: None,
            held: VecDeque::new(),
            waiting_since_ns: None,
            hold_max_ns,
            held_max,
        }
    }

    /// The next trade id this sink will deliver, if any event was seen.
    pub fn next_id(&self) -> Option<i64> {
        self.next
    }

    /// The ids currently missing (between the next expected id and the first held event).
    pub fn missing(&self) -> Option<Unrepaired> {
        let next = self.next?;
        let first_held = self.held.front()?.first;
        (first_held > next).then(|| Unrepaired {
            from: next,
            to: first_held - 1,
        })
    }

    /// Events held.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Offers an event with trade ids `first..=last` (live or repaired) at `now_ns`. On
    /// [`Verdict::Held`] the order keeps `item`; otherwise it is handed back beside the verdict.
    pub fn offer(&mut self, first: i64, last: i64, item: T, now_ns: u64) -> (Verdict, Option<T>) {
        debug_assert!(first <= last, "an event covers at least one id");
        let Some(next) = self.next else {
            self.next = Some(last.saturating_add(1));
            return (Verdict::Deliver { from: first }, Some(item));
        };
        if last < next {
            return (Verdict::Duplicate, Some(item));
        }
        if first <= next {
            self.next = Some(last.saturating_add(1));
            return (Verdict::Deliver { from: next }, Some(item));
        }
        if self.hold_max_ns == 0 || self.held_max == 0 {
            // No repair will come: pass over the gap at once.
            self.next = Some(last.saturating_add(1));
            return (Verdict::Deliver { from: first }, Some(item));
        }
        self.hold(first, last, item, now_ns);
        (Verdict::Held, None)
    }

    fn hold(&mut self, first: i64, last: i64, item: T, now_ns: u64) {
        let at = self.held.partition_point(|h| h.first <= first);
        self.held.insert(at, Held { first, last, item });
        self.waiting_since_ns.get_or_insert(now_ns);
    }

    /// The next held event that can be delivered now (contiguous with what was delivered), with
    /// the id to deliver it from; held duplicates are handed back with `Verdict::Duplicate`.
    /// Call until it returns `None` after every `Deliver`.
    pub fn release(&mut self) -> Option<(Verdict, T)> {
        let next = self.next?;
        let front = self.held.front()?;
        if front.first > next {
            return None;
        }
        let held = self.held.pop_front()?;
        if self.held.is_empty() {
            self.waiting_since_ns = None;
        }
        if held.last < next {
            return Some((Verdict::Duplicate, held.item));
        }
        self.next = Some(held.last.saturating_add(1));
        Some((Verdict::Deliver { from: next }, held.item))
    }

    /// Whether the hold has lasted too long at `now_ns`, or holds too many events: then the
    /// missing ids are given up on (returned, to be counted) and the held events become
    /// deliverable through [`TradeOrder::release`].
    pub fn expire(&mut self, now_ns: u64) -> Option<Unrepaired> {
        let since = self.waiting_since_ns?;
        let overdue = now_ns.saturating_sub(since) >= self.hold_max_ns;
        let overfull = self.held.len() > self.held_max;
        if !overdue && !overfull {
            return None;
        }
        let missing = self.missing();
        if let Some(front) = self.held.front() {
            self.next = Some(front.first);
        }
        // The next gap (if any held events remain past another gap) waits afresh from now.
        self.waiting_since_ns = Some(now_ns);
        missing
    }

    /// Gives up on whatever is missing now (at shutdown, or when the sidecar reports that the
    /// ids cannot be fetched): returns the ids given up on; held events become releasable.
    pub fn give_up(&mut self) -> Option<Unrepaired> {
        let missing = self.missing();
        if let Some(front) = self.held.front() {
            self.next = Some(front.first);
        }
        missing
    }

    /// Forgets the symbol's position (the symbol was removed, or the stream restarted from
    /// scratch): held events are handed back in order for the sink to deliver or drop.
    pub fn reset(&mut self) -> impl Iterator<Item = T> + '_ {
        self.next = None;
        self.waiting_since_ns = None;
        self.held.drain(..).map(|h| h.item)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HOLD: u64 = 1_000;

    fn deliver_all(
        order: &mut TradeOrder<(i64, i64)>,
        out: &mut Vec<i64>,
        from: i64,
        item: (i64, i64),
    ) {
        out.extend(from..=item.1);
        while let Some((verdict, held)) = order.release() {
            if let Verdict::Deliver { from } = verdict {
                out.extend(from..=held.1);
            }
        }
    }

    fn offer(
        order: &mut TradeOrder<(i64, i64)>,
        out: &mut Vec<i64>,
        first: i64,
        last: i64,
        now: u64,
    ) -> Verdict {
        let (verdict, item) = order.offer(first, last, (first, last), now);
        if let (Verdict::Deliver { from }, Some(item)) = (verdict, item) {
            deliver_all(order, out, from, item);
        }
        verdict
    }

    #[test]
    fn contiguous_events_are_delivered_at_once() {
        let mut order = TradeOrder::new(HOLD, 16);
        let mut out = Vec::new();
        assert_eq!(
            offer(&mut order, &mut out, 10, 12, 0),
            Verdict::Deliver { from: 10 }
        );
        assert_eq!(
            offer(&mut order, &mut out, 13, 13, 0),
            Verdict::Deliver { from: 13 }
        );
        assert_eq!(out, vec![10, 11, 12, 13]);
        assert_eq!(order.next_id(), Some(14));
    }

    #[test]
    fn a_gap_holds_later_events_until_the_repair_arrives() {
        let mut order = TradeOrder::new(HOLD, 16);
        let mut out = Vec::new();
        offer(&mut order, &mut out, 1, 2, 0);
        assert_eq!(offer(&mut order, &mut out, 6, 7, 1), Verdict::Held);
        assert_eq!(offer(&mut order, &mut out, 8, 8, 2), Verdict::Held);
        assert_eq!(order.missing(), Some(Unrepaired { from: 3, to: 5 }));
        // The repair covers the gap and overlaps the held event: nothing twice.
        assert_eq!(
            offer(&mut order, &mut out, 3, 6, 3),
            Verdict::Deliver { from: 3 }
        );
        assert_eq!(out, (1..=8).collect::<Vec<_>>());
        assert_eq!(order.held_len(), 0);
        assert_eq!(order.missing(), None);
    }

    #[test]
    fn a_late_live_event_overlapping_a_repair_is_trimmed_or_dropped() {
        let mut order = TradeOrder::new(HOLD, 16);
        let mut out = Vec::new();
        offer(&mut order, &mut out, 1, 5, 0);
        assert_eq!(
            offer(&mut order, &mut out, 3, 7, 0),
            Verdict::Deliver { from: 6 }
        );
        assert_eq!(offer(&mut order, &mut out, 2, 4, 0), Verdict::Duplicate);
        assert_eq!(out, (1..=7).collect::<Vec<_>>());
    }

    #[test]
    fn an_overdue_hold_gives_up_and_releases_in_order() {
        let mut order = TradeOrder::new(HOLD, 16);
        let mut out = Vec::new();
        offer(&mut order, &mut out, 1, 1, 0);
        offer(&mut order, &mut out, 5, 5, 10);
        offer(&mut order, &mut out, 9, 9, 20);
        assert_eq!(order.expire(HOLD), None, "not yet");
        assert_eq!(order.expire(HOLD + 10), Some(Unrepaired { from: 2, to: 4 }));
        while let Some((Verdict::Deliver { from }, (_, last))) = order.release() {
            out.extend(from..=last);
        }
        assert_eq!(out, vec![1, 5]);
        // The second gap waits afresh, then is given up too.
        assert_eq!(order.missing(), Some(Unrepaired { from: 6, to: 8 }));
        assert_eq!(
            order.expire(2 * HOLD + 10),
            Some(Unrepaired { from: 6, to: 8 })
        );
        let (verdict, _) = order.release().expect("released");
        assert_eq!(verdict, Verdict::Deliver { from: 9 });
        assert_eq!(order.next_id(), Some(10));
    }

    #[test]
    fn too_many_held_events_give_up_early() {
        let mut order = TradeOrder::new(u64::MAX, 2);
        let mut out = Vec::new();
        offer(&mut order, &mut out, 1, 1, 0);
        for id in [3, 4, 5] {
            offer(&mut order, &mut out, id, id, 0);
        }
        assert_eq!(order.expire(0), Some(Unrepaired { from: 2, to: 2 }));
        assert_eq!(order.give_up(), None);
    }

    #[test]
    fn without_a_hold_gaps_are_passed_over() {
        let mut order = TradeOrder::new(0, 0);
        let mut out = Vec::new();
        offer(&mut order, &mut out, 1, 1, 0);
        assert_eq!(
            offer(&mut order, &mut out, 4, 4, 0),
            Verdict::Deliver { from: 4 }
        );
        assert_eq!(out, vec![1, 4]);
    }

    #[test]
    fn reset_hands_back_held_events_and_starts_afresh() {
        let mut order = TradeOrder::new(HOLD, 16);
        let mut out = Vec::new();
        offer(&mut order, &mut out, 1, 1, 0);
        offer(&mut order, &mut out, 3, 3, 0);
        assert_eq!(order.reset().collect::<Vec<_>>(), vec![(3, 3)]);
        assert_eq!(order.next_id(), None);
        assert_eq!(
            offer(&mut order, &mut out, 100, 100, 0),
            Verdict::Deliver { from: 100 }
        );
    }

    /// Events covering 1..=n split at `cuts`.
    fn events(n: i64, cuts: &[i64]) -> Vec<(i64, i64)> {
        let mut bounds: Vec<i64> = cuts.iter().map(|c| 1 + c.rem_euclid(n)).collect();
        bounds.push(1);
        bounds.push(n + 1);
        bounds.sort_unstable();
        bounds.dedup();
        bounds.windows(2).map(|w| (w[0], w[1] - 1)).collect()
    }

    proptest! {
        /// Live events with some lost, then repairs (each lost range, possibly widened to
        /// overlap its neighbours) in any order: every id is delivered exactly once, in order.
        #[test]
        fn live_and_repaired_trades_merge_exactly_once_in_order(
            n in 2i64..200,
            cuts in proptest::collection::vec(0i64..1000, 0..40),
            lost in proptest::collection::vec(any::<bool>(), 0..40),
            widen in proptest::collection::vec(0i64..4, 0..40),
            repair_order in proptest::collection::vec(any::<u16>(), 0..40),
        ) {
            let all = events(n, &cuts);
            let mut order = TradeOrder::new(u64::MAX, usize::MAX);
            let mut out = Vec::new();
            let mut repairs = Vec::new();
            for (i, &(first, last)) in all.iter().enumerate() {
                let is_lost = i > 0 && lost.get(i).copied().unwrap_or(false);
                if is_lost {
                    let w = widen.get(i).copied().unwrap_or(0);
                    repairs.push(((first - w).max(1), (last + w).min(n)));
                } else {
                    offer(&mut order, &mut out, first, last, 0);
                }
            }
            let mut keyed: Vec<_> = repairs
                .into_iter()
                .enumerate()
                .map(|(i, r)| (repair_order.get(i).copied().unwrap_or(0), r))
                .collect();
            keyed.sort_by_key(|(k, _)| *k);
            for (_, (first, last)) in keyed {
                offer(&mut order, &mut out, first, last, 0);
            }
            // Whatever was lost at the tail with nothing after it is simply delivered late.
            prop_assert_eq!(out, (1..=n).collect::<Vec<_>>());
            prop_assert_eq!(order.held_len(), 0);
        }
    }
}
