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
//! is delivered from the next expected id on (the sink trims it). A symbol's order starts at
//! the first event the sink sees of it, unless the reader announced ids lost at the sink's full
//! ring before that ([`TradeOrder::announce`], [`crate::feed::announce`]): then it starts at
//! the first lost id, so their repair is delivered (in order), not taken for a duplicate.
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
    /// When it was held: the gap before it was known from then on.
    since_ns: u64,
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
    /// The last id announced lost before the first event ([`TradeOrder::announce`]): until
    /// `next` passes it, ids are known missing even with nothing held.
    announced_last: Option<i64>,
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
            announced_last: None,
        }
    }

    /// Whether ids are known missing: events are held back behind a gap, or ids announced
    /// lost are not delivered yet.
    pub fn lacks_ids(&self) -> bool {
        let announced = matches!(
            (self.next, self.announced_last),
            (Some(next), Some(last)) if next <= last
        );
        announced || !self.held.is_empty()
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

    /// Trade ids `from..=to` were lost before this sink saw any event of the symbol (an
    /// announcement, [`crate::feed::announce`]): the order starts at `from`, so later events
    /// wait for their repair, which is then delivered, not taken for a duplicate. Once the
    /// order has started, its own gap check sees losses: nothing changes.
    pub fn announce(&mut self, from: i64, to: i64) {
        if self.next.is_none() && from <= to {
            self.next = Some(from);
            self.announced_last = Some(to);
        }
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
        self.held.insert(
            at,
            Held {
                first,
                last,
                item,
                since_ns: now_ns,
            },
        );
        self.waiting_since_ns.get_or_insert(now_ns);
    }

    /// The wait of the gaps still open runs from when the earliest of them was seen, not from
    /// a gap already closed (a later gap must get its whole hold, as the sidecar's give-up
    /// bound assumes).
    fn restart_wait(&mut self) {
        self.waiting_since_ns = self.held.iter().map(|h| h.since_ns).min();
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
        self.restart_wait();
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
        // A further gap among the held events waits from when it was seen.
        self.restart_wait();
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
        self.announced_last = None;
        self.held.drain(..).map(|h| h.item)
    }
}

/// What [`TradeOrders`] did since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderCounts {
    /// Events dropped because every id they carry was delivered already.
    pub duplicates: u64,
    /// Ids given up on: they never arrived within the hold bounds, the sidecar reported them
    /// unfetchable, or they were still missing at shutdown.
    pub unrepaired_ids: u64,
    /// Gaps given up on (each counted once, whatever its length).
    pub unrepaired_gaps: u64,
}

/// One symbol's order and the ranges the sidecar said it cannot fetch.
#[derive(Debug)]
struct SymbolOrder<T> {
    order: TradeOrder<T>,
    /// Ranges reported unfetchable ([`TradeOrders::unfetchable`]) not yet passed; the order
    /// gives up on its missing ids once these cover them all.
    unfetchable: Vec<Unrepaired>,
}

/// The trade order of every symbol of one sink: the sink offers each trade event (live or
/// repaired) and delivers what lands in `out`, `(event, first id to deliver)`, in order. A
/// symbol's order starts with the first event the sink sees of it.
///
/// `out` is the caller's reusable buffer: on the steady path (contiguous ids) nothing here
/// allocates; holding events (a gap) uses the symbol's held queue.
#[derive(Debug)]
pub struct TradeOrders<T> {
    symbols: Vec<Option<SymbolOrder<T>>>,
    /// Symbols holding events: [`TradeOrders::expire`] looks only at these.
    holding: Vec<u16>,
    hold_max_ns: u64,
    held_max: usize,
    counts: OrderCounts,
    /// Gaps given up on since [`TradeOrders::take_given_up`] last ran, for the sink's log.
    given_up: Vec<(u16, Unrepaired)>,
}

impl<T> TradeOrders<T> {
    /// Orders that hold a symbol's events at most `hold_max_ns` after a gap and at most
    /// `held_max` events per symbol (a zero for either: gaps are passed over at once).
    pub fn new(hold_max_ns: u64, held_max: usize) -> TradeOrders<T> {
        TradeOrders {
            symbols: Vec::new(),
            holding: Vec::new(),
            hold_max_ns,
            held_max,
            counts: OrderCounts::default(),
            given_up: Vec::new(),
        }
    }

    /// What happened so far.
    pub fn counts(&self) -> OrderCounts {
        self.counts
    }

    /// Events held, all symbols.
    pub fn held(&self) -> usize {
        self.holding
            .iter()
            .filter_map(|&s| self.symbols.get(usize::from(s))?.as_ref())
            .map(|s| s.order.held_len())
            .sum()
    }

    /// Whether `symbol`'s delivered trades lack ids known missing: events held back behind a
    /// gap, or ids announced lost before the first event and not yet repaired (nothing is held
    /// then until a later event comes, but the ids are missing all the same).
    pub fn holds(&self, symbol: u16) -> bool {
        self.symbols
            .get(usize::from(symbol))
            .and_then(Option::as_ref)
            .is_some_and(|s| s.order.lacks_ids())
    }

    /// The next id symbol `symbol` will deliver, once it has an order.
    pub fn next_id(&self, symbol: u16) -> Option<i64> {
        self.symbols
            .get(usize::from(symbol))?
            .as_ref()?
            .order
            .next_id()
    }

    /// The gaps given up on since the last call (symbol, ids), to log once per gap.
    pub fn take_given_up(&mut self) -> std::vec::Drain<'_, (u16, Unrepaired)> {
        self.given_up.drain(..)
    }

    /// Offers a trade event with ids `first..=last` of `symbol` at `now_ns`; what can be
    /// delivered now (it, and held events it unblocked) is appended to `out` in order.
    pub fn offer(
        &mut self,
        symbol: u16,
        first: i64,
        last: i64,
        item: T,
        now_ns: u64,
        out: &mut Vec<(T, i64)>,
    ) {
        let (hold_max_ns, held_max) = (self.hold_max_ns, self.held_max);
        let index = usize::from(symbol);
        if self.symbols.len() <= index {
            self.symbols.resize_with(index + 1, || None);
        }
        let entry = self.symbols[index].get_or_insert_with(|| SymbolOrder {
            order: TradeOrder::new(hold_max_ns, held_max),
            unfetchable: Vec::new(),
        });
        match entry.order.offer(first, last, item, now_ns) {
            (Verdict::Deliver { from }, Some(item)) => {
                out.push((item, from));
                release(&mut entry.order, &mut self.counts, out);
            }
            (Verdict::Duplicate, _) => self.counts.duplicates += 1,
            _ => {}
        }
        self.settle(symbol, out);
    }

    /// Trade ids `from..=to` of `symbol` were lost before this sink saw any of the symbol's
    /// ([`TradeOrder::announce`]).
    pub fn announce(&mut self, symbol: u16, from: i64, to: i64) {
        let (hold_max_ns, held_max) = (self.hold_max_ns, self.held_max);
        let index = usize::from(symbol);
        if self.symbols.len() <= index {
            self.symbols.resize_with(index + 1, || None);
        }
        self.symbols[index]
            .get_or_insert_with(|| SymbolOrder {
                order: TradeOrder::new(hold_max_ns, held_max),
                unfetchable: Vec::new(),
            })
            .order
            .announce(from, to);
    }

    /// The sidecar cannot fetch ids `from..=to` of `symbol`: once the ids the symbol misses
    /// are all reported so, the order stops waiting for them (counted as unrepaired) and
    /// delivers what it held.
    pub fn unfetchable(&mut self, symbol: u16, from: i64, to: i64, out: &mut Vec<(T, i64)>) {
        let Some(entry) = self
            .symbols
            .get_mut(usize::from(symbol))
            .and_then(Option::as_mut)
        else {
            // Nothing of the symbol was seen: nothing waits for these ids.
            return;
        };
        if from <= to {
            entry.unfetchable.push(Unrepaired { from, to });
        }
        self.settle(symbol, out);
    }

    /// Gives up on gaps held longer than the hold bound (or holding too many events) at
    /// `now_ns`, delivering what they held. Cheap when nothing is held.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<(T, i64)>) {
        let mut at = 0;
        while at < self.holding.len() {
            let symbol = self.holding[at];
            if let Some(entry) = self
                .symbols
                .get_mut(usize::from(symbol))
                .and_then(Option::as_mut)
            {
                if let Some(missing) = entry.order.expire(now_ns) {
                    self.counts.unrepaired_ids += missing.count();
                    self.counts.unrepaired_gaps += 1;
                    self.given_up.push((symbol, missing));
                    release(&mut entry.order, &mut self.counts, out);
                }
                if entry.order.held_len() > 0 {
                    at += 1;
                    continue;
                }
            }
            self.holding.swap_remove(at);
        }
    }

    /// At shutdown: gives up on every gap and delivers everything held, in order.
    pub fn finish(&mut self, out: &mut Vec<(T, i64)>) {
        for symbol in std::mem::take(&mut self.holding) {
            let Some(entry) = self
                .symbols
                .get_mut(usize::from(symbol))
                .and_then(Option::as_mut)
            else {
                continue;
            };
            give_up_all(
                symbol,
                &mut entry.order,
                &mut self.counts,
                &mut self.given_up,
                out,
            );
        }
    }

    /// The symbol was removed (unsubscribed): what it held is delivered (the ids still
    /// missing before it are given up on, counted) and its order is forgotten, so that when the
    /// symbol is added again its first event starts a new order instead of waiting for the ids
    /// traded while it was away.
    pub fn forget(&mut self, symbol: u16, out: &mut Vec<(T, i64)>) {
        let Some(entry) = self
            .symbols
            .get_mut(usize::from(symbol))
            .and_then(Option::as_mut)
        else {
            return;
        };
        give_up_all(
            symbol,
            &mut entry.order,
            &mut self.counts,
            &mut self.given_up,
            out,
        );
        self.symbols[usize::from(symbol)] = None;
        self.holding.retain(|&s| s != symbol);
    }

    /// After a change to `symbol`: gives up on its missing ids if they are all reported
    /// unfetchable, forgets reports it has passed, and keeps the holding list true.
    fn settle(&mut self, symbol: u16, out: &mut Vec<(T, i64)>) {
        let Some(entry) = self
            .symbols
            .get_mut(usize::from(symbol))
            .and_then(Option::as_mut)
        else {
            return;
        };
        if !entry.unfetchable.is_empty() {
            while let Some(missing) = entry.order.missing() {
                if !covered(missing, &entry.unfetchable) {
                    break;
                }
                entry.order.give_up();
                self.counts.unrepaired_ids += missing.count();
                self.counts.unrepaired_gaps += 1;
                self.given_up.push((symbol, missing));
                release(&mut entry.order, &mut self.counts, out);
            }
            if let Some(next) = entry.order.next_id() {
                entry.unfetchable.retain(|u| u.to >= next);
            }
        }
        if entry.order.held_len() > 0 && !self.holding.contains(&symbol) {
            self.holding.push(symbol);
        }
    }
}

/// Appends every held event `order` can deliver now to `out`; counts held duplicates.
fn release<T>(order: &mut TradeOrder<T>, counts: &mut OrderCounts, out: &mut Vec<(T, i64)>) {
    while let Some((verdict, item)) = order.release() {
        match verdict {
            Verdict::Deliver { from } => out.push((item, from)),
            Verdict::Duplicate | Verdict::Held => counts.duplicates += 1,
        }
    }
}

/// Gives up on every gap `order` holds events behind (counted, told in `given_up`) and
/// appends all it held to `out`, in order.
fn give_up_all<T>(
    symbol: u16,
    order: &mut TradeOrder<T>,
    counts: &mut OrderCounts,
    given_up: &mut Vec<(u16, Unrepaired)>,
    out: &mut Vec<(T, i64)>,
) {
    while order.held_len() > 0 {
        if let Some(missing) = order.give_up() {
            counts.unrepaired_ids += missing.count();
            counts.unrepaired_gaps += 1;
            given_up.push((symbol, missing));
        }
        release(order, counts, out);
    }
}

/// Whether every id of `missing` lies in one of `ranges`.
fn covered(missing: Unrepaired, ranges: &[Unrepaired]) -> bool {
    let mut at = missing.from;
    while at <= missing.to {
        let Some(range) = ranges.iter().find(|r| r.from <= at && at <= r.to) else {
            return false;
        };
        if range.to >= missing.to {
            return true;
        }
        at = range.to + 1;
    }
    true
}

/// Copies a sink's order counts to its live counters and logs each trade gap given up on: the
/// first [`GAPS_LOGGED_MAX`](crate::constants::GAPS_LOGGED_MAX) one by one, later ones only
/// counted (a gap storm must not flood the log).
pub fn note<T>(
    sink: &str,
    orders: &mut TradeOrders<T>,
    stats: &super::SinkStats,
    gaps_logged: &mut u32,
) {
    use crate::constants::GAPS_LOGGED_MAX;
    let counts = orders.counts();
    stats.duplicates.set(counts.duplicates);
    stats.unrepaired.set(counts.unrepaired_ids);
    for (symbol, missing) in orders.take_given_up() {
        *gaps_logged = gaps_logged.saturating_add(1);
        if *gaps_logged <= GAPS_LOGGED_MAX {
            tracing::warn!(
                "{sink}: trades {}..={} of symbol #{symbol} never came ({} ids): given up{}",
                missing.from,
                missing.to,
                missing.count(),
                if *gaps_logged == GAPS_LOGGED_MAX {
                    " (further gaps are counted, not logged)"
                } else {
                    ""
                }
            );
        }
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
    fn a_later_gap_gets_its_whole_hold_after_an_earlier_one_is_repaired() {
        let mut order = TradeOrder::new(HOLD, 16);
        let mut out = Vec::new();
        offer(&mut order, &mut out, 1, 1, 0);
        offer(&mut order, &mut out, 5, 5, 0); // gap 2..=4 seen at 0
        offer(&mut order, &mut out, 9, 9, 900); // gap 6..=8 seen at 900
        offer(&mut order, &mut out, 2, 4, 950); // the first gap is repaired
        assert_eq!(out, vec![1, 2, 3, 4, 5]);
        assert_eq!(
            order.expire(HOLD + 10),
            None,
            "the second gap is only 110 ns old"
        );
        assert_eq!(
            order.expire(900 + HOLD),
            Some(Unrepaired { from: 6, to: 8 })
        );
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

    /// Regression: the repair of a symbol's first events, lost at a full ring before the sink
    /// saw any of its events, was taken for a duplicate (the order started at the first live
    /// event after them): silent loss. Announced, they are waited for and delivered in order.
    #[test]
    fn ids_announced_lost_before_the_first_event_are_waited_for_and_delivered() {
        let mut orders = TradeOrders::new(HOLD, 16);
        let mut out = Vec::new();
        let mut ids = Vec::new();
        orders.announce(0, 1, 5);
        orders.offer(0, 6, 8, (6, 8), 0, &mut out);
        collect(&mut out, &mut ids);
        assert!(ids.is_empty(), "6..=8 waits for 1..=5");
        orders.offer(0, 1, 5, (1, 5), 1, &mut out);
        collect(&mut out, &mut ids);
        assert_eq!(ids, (1..=8).collect::<Vec<_>>());
        assert_eq!(orders.counts(), OrderCounts::default());
        assert!(!orders.holds(0), "repaired: nothing missing");
        // Once started, an announcement changes nothing (the gap check sees losses).
        orders.announce(0, 2, 3);
        assert_eq!(orders.next_id(0), Some(9));
        // Without the announcement the repair is taken for a duplicate (the bug).
        let mut unannounced = TradeOrders::new(HOLD, 16);
        unannounced.offer(0, 6, 8, (6, 8), 0, &mut out);
        unannounced.offer(0, 1, 5, (1, 5), 1, &mut out);
        assert_eq!(unannounced.counts().duplicates, 1);
    }

    /// Regression: ids announced lost before a symbol's first event were missing from what
    /// the sink delivered, yet with nothing held yet the symbol did not count as holding: the
    /// Redis windows were written `trades_complete=1` without them.
    #[test]
    fn ids_announced_lost_count_as_missing_until_delivered() {
        let mut orders = TradeOrders::new(HOLD, 16);
        let mut out = Vec::new();
        orders.announce(0, 1, 5);
        assert!(orders.holds(0), "1..=5 missing, nothing held");
        orders.offer(0, 1, 3, (1, 3), 0, &mut out);
        assert!(orders.holds(0), "4..=5 still missing");
        orders.offer(0, 4, 5, (4, 5), 0, &mut out);
        assert!(!orders.holds(0));
        assert!(!orders.holds(1), "a symbol never seen lacks nothing known");
    }

    /// Delivers `(first, last)` items from `out` into `ids`, from their delivery id.
    fn collect(out: &mut Vec<((i64, i64), i64)>, ids: &mut Vec<i64>) {
        for ((_, last), from) in out.drain(..) {
            ids.extend(from..=last);
        }
    }

    #[test]
    fn orders_of_symbols_are_independent_and_the_steady_path_holds_nothing() {
        let mut orders = TradeOrders::new(HOLD, 16);
        let mut out = Vec::new();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (symbol, first, last) in [(0, 1, 2), (1, 50, 50), (0, 3, 3), (1, 51, 53)] {
            orders.offer(symbol, first, last, (first, last), 0, &mut out);
            collect(&mut out, if symbol == 0 { &mut a } else { &mut b });
        }
        assert_eq!((a, b), (vec![1, 2, 3], vec![50, 51, 52, 53]));
        assert_eq!(orders.held(), 0);
        assert_eq!(orders.counts(), OrderCounts::default());
        assert_eq!(orders.next_id(1), Some(54));
    }

    #[test]
    fn a_repair_releases_held_events_and_late_copies_are_duplicates() {
        let mut orders = TradeOrders::new(HOLD, 16);
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for (first, last) in [(1, 1), (4, 5), (6, 6)] {
            orders.offer(0, first, last, (first, last), 0, &mut out);
        }
        collect(&mut out, &mut ids);
        assert_eq!(ids, vec![1]);
        assert_eq!(orders.held(), 2);
        // The repair reaches into the held event: trimmed, not twice.
        orders.offer(0, 2, 4, (2, 4), 1, &mut out);
        collect(&mut out, &mut ids);
        assert_eq!(ids, (1..=6).collect::<Vec<_>>());
        orders.offer(0, 3, 3, (3, 3), 2, &mut out);
        assert!(out.is_empty());
        assert_eq!(orders.counts().duplicates, 1);
        assert_eq!(orders.held(), 0);
        orders.expire(u64::MAX, &mut out);
        assert_eq!(orders.counts().unrepaired_ids, 0);
    }

    #[test]
    fn unfetchable_ids_are_given_up_only_once_every_missing_id_is_reported() {
        let mut orders = TradeOrders::new(HOLD, 16);
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for (first, last) in [(1, 1), (11, 11)] {
            orders.offer(0, first, last, (first, last), 0, &mut out);
        }
        collect(&mut out, &mut ids);
        // Ids 2..=10 are missing; 2..=5 cannot be fetched, 6..=10 are still coming.
        orders.unfetchable(0, 2, 5, &mut out);
        assert!(out.is_empty(), "6..=10 may still come");
        orders.offer(0, 6, 10, (6, 10), 0, &mut out);
        collect(&mut out, &mut ids);
        // 6..=10 arrived and is held behind 2..=5, which is now all that is missing.
        assert_eq!(ids, vec![1, 6, 7, 8, 9, 10, 11]);
        assert_eq!(orders.counts().unrepaired_ids, 4);
        assert_eq!(
            orders.take_given_up().collect::<Vec<_>>(),
            vec![(0, Unrepaired { from: 2, to: 5 })]
        );
        assert_eq!(orders.take_given_up().count(), 0, "logged once");
        // Reports of a symbol never seen, and of ids passed, change nothing.
        orders.unfetchable(7, 1, 2, &mut out);
        orders.unfetchable(0, 2, 5, &mut out);
        assert!(out.is_empty());
        assert_eq!(orders.counts().unrepaired_gaps, 1);
    }

    #[test]
    fn a_gap_reported_in_two_parts_is_given_up_when_both_came() {
        let mut orders = TradeOrders::new(HOLD, 16);
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for (first, last) in [(1, 1), (9, 9)] {
            orders.offer(0, first, last, (first, last), 0, &mut out);
        }
        orders.unfetchable(0, 5, 8, &mut out);
        collect(&mut out, &mut ids);
        assert_eq!(ids, vec![1]);
        orders.unfetchable(0, 2, 4, &mut out);
        collect(&mut out, &mut ids);
        assert_eq!(ids, vec![1, 9]);
        assert_eq!(orders.counts().unrepaired_ids, 7);
    }

    #[test]
    fn an_overdue_gap_expires_and_shutdown_delivers_everything_held() {
        let mut orders = TradeOrders::new(HOLD, 16);
        let mut out = Vec::new();
        let mut ids = Vec::new();
        orders.offer(0, 1, 1, (1, 1), 0, &mut out);
        orders.offer(0, 3, 3, (3, 3), 10, &mut out);
        orders.offer(1, 1, 1, (1, 1), 10, &mut out);
        orders.offer(1, 5, 6, (5, 6), 10, &mut out);
        orders.offer(1, 9, 9, (9, 9), 10, &mut out);
        out.clear();
        orders.expire(HOLD, &mut out);
        assert!(out.is_empty(), "not yet");
        orders.expire(HOLD + 10, &mut out);
        assert_eq!(out.len(), 2, "both symbols' first gaps expired");
        out.clear();
        assert_eq!(orders.counts().unrepaired_ids, 1 + 3);
        assert_eq!(orders.held(), 1, "symbol 1 still waits for 7..=8");
        orders.finish(&mut out);
        collect(&mut out, &mut ids);
        assert_eq!(ids, vec![9]);
        assert_eq!(orders.held(), 0);
        assert_eq!(orders.counts().unrepaired_ids, 1 + 3 + 2);
        assert_eq!(orders.counts().unrepaired_gaps, 3);
    }

    #[test]
    fn without_a_hold_nothing_waits() {
        let mut orders = TradeOrders::new(0, 0);
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for (first, last) in [(1, 1), (4, 4), (2, 2)] {
            orders.offer(0, first, last, (first, last), 0, &mut out);
        }
        collect(&mut out, &mut ids);
        assert_eq!(ids, vec![1, 4]);
        assert_eq!(orders.counts().duplicates, 1);
    }

    /// Regression: a symbol removed and added again stalled, its first events after the
    /// return held as if the ids traded while it was away were missing.
    #[test]
    fn a_forgotten_symbol_starts_afresh_and_delivers_what_it_held() {
        let mut orders = TradeOrders::new(HOLD, 16);
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for (first, last) in [(1, 1), (4, 4)] {
            orders.offer(0, first, last, (first, last), 0, &mut out);
        }
        orders.offer(1, 7, 7, (7, 7), 0, &mut out);
        collect(&mut out, &mut ids);
        assert_eq!(ids, vec![1, 7]);
        orders.forget(0, &mut out);
        collect(&mut out, &mut ids);
        assert_eq!(ids, vec![1, 7, 4], "what it held is delivered");
        assert_eq!(orders.counts().unrepaired_ids, 2);
        assert_eq!(orders.held(), 0);
        assert_eq!(orders.next_id(0), None);
        // Back after trading went on: no wait, no gap.
        orders.offer(0, 500, 501, (500, 501), 1, &mut out);
        collect(&mut out, &mut ids);
        assert_eq!(ids, vec![1, 7, 4, 500, 501]);
        assert_eq!(orders.held(), 0);
        assert_eq!(orders.counts().unrepaired_gaps, 1);
        // Other symbols and unknown ones are untouched.
        orders.forget(9, &mut out);
        assert_eq!(orders.next_id(1), Some(8));
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

        /// Several symbols; live events with some lost; each lost event repaired (possibly
        /// widened) or reported unfetchable; live events and repairs interleaved, the reports
        /// last (the sidecar gives up after trying), then shutdown: every id that arrived is
        /// delivered exactly once, in order per symbol, and the ids between that never came
        /// are counted unrepaired.
        #[test]
        fn every_arrived_id_is_delivered_once_in_order_and_the_rest_counted(
            n in 2i64..120,
            cuts in proptest::collection::vec(0i64..1000, 0..30),
            fate in proptest::collection::vec(0u8..6, 0..30),
            widen in proptest::collection::vec(0i64..3, 0..30),
            shuffle in proptest::collection::vec(any::<u16>(), 0..80),
            report in any::<bool>(),
        ) {
            let all = events(n, &cuts);
            let mut orders = TradeOrders::new(u64::MAX, usize::MAX);
            let mut arrivals = Vec::new();
            let mut reports = Vec::new();
            let mut arrived = std::collections::BTreeSet::new();
            for symbol in 0..2u16 {
                for (i, &(first, last)) in all.iter().enumerate() {
                    let fate = if i == 0 { 0 } else { fate.get(i).copied().unwrap_or(0) };
                    let (first, last) = match fate {
                        // Lost, repaired, widened into its neighbours.
                        4 => {
                            let w = widen.get(i).copied().unwrap_or(0);
                            ((first - w).max(1), (last + w).min(n))
                        }
                        // Lost for good: the sidecar reports it.
                        5 => {
                            reports.push((symbol, first, last));
                            continue;
                        }
                        _ => (first, last),
                    };
                    arrived.extend((first..=last).map(|id| (symbol, id)));
                    arrivals.push((symbol, first, last));
                }
            }
            let mut keyed: Vec<_> = arrivals
                .into_iter()
                .enumerate()
                .map(|(i, a)| (shuffle.get(i).copied().unwrap_or(0), a))
                .collect();
            keyed.sort_by_key(|(k, _)| *k);
            let mut out = Vec::new();
            let mut got: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let drain = |out: &mut Vec<((u16, i64), i64)>, got: &mut [Vec<i64>; 2]| {
                for ((symbol, last), from) in out.drain(..) {
                    got[usize::from(symbol)].extend(from..=last);
                }
            };
            for (_, (symbol, first, last)) in keyed {
                orders.offer(symbol, first, last, (symbol, last), 0, &mut out);
                drain(&mut out, &mut got);
            }
            if report {
                for (symbol, from, to) in reports {
                    orders.unfetchable(symbol, from, to, &mut out);
                    drain(&mut out, &mut got);
                }
            }
            orders.finish(&mut out);
            drain(&mut out, &mut got);
            prop_assert_eq!(orders.held(), 0);
            let mut unrepaired = 0;
            for symbol in 0..2u16 {
                let ids = &got[usize::from(symbol)];
                prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, once: {:?}", ids);
                let first = ids[0];
                let last = ids[ids.len() - 1];
                let expected: Vec<i64> = arrived
                    .iter()
                    .filter(|(s, id)| *s == symbol && *id >= first)
                    .map(|&(_, id)| id)
                    .collect();
                prop_assert_eq!(ids, &expected);
                unrepaired += (last - first + 1) as u64 - ids.len() as u64;
            }
            prop_assert_eq!(orders.counts().unrepaired_ids, unrepaired);
        }
    }
}
