//! Trade backfill planning, pure: which trade ids are missing for which consumers, which REST
//! page to fetch next, and who gets what a page returned.
//!
//! Gaps arrive as requests: a symbol, an inclusive id range, and the consumers that lost it (a
//! wire gap: every consumer; a full ring: that consumer alone). Requests of one symbol are
//! served oldest first by `GET /api/v3/historicalTrades?fromId=` pages of at most
//! [`PAGE_IDS_MAX`] ids, one page in flight per symbol. A page's trades go to every request
//! they overlap, each request's consumers getting exactly the intersection, so a consumer never
//! receives an id twice from the backfill even when requests overlap. A failed page is retried
//! after the delay the shell chooses; a request older than `give_up_after_ns` is abandoned
//! and reported so the sinks stop waiting for it.
//!
//! Pages are paced ([`Backfill::with_pace`]): a page weighs 25 whatever its length, so under a
//! storm of gaps the plan fetches at most a set number of pages a minute (after a burst) and
//! lets gaps pile up meanwhile, each page then serving every gap of its symbol within its
//! 1000 ids. Isolated gaps are fetched at once, from the burst.
//!
//! Time is an argument; the shell owns the REST client, the clock and the rings.

use std::collections::VecDeque;

/// The most ids one `historicalTrades` page returns (Binance's `limit` maximum).
pub const PAGE_IDS_MAX: u32 = 1000;

/// Pages fetched per minute at most, sustained: 120 pages of weight 25 are 3000 of the REST
/// client's 5000 a minute ([`crate::binance::rest::DEFAULT_WEIGHT_BUDGET`]), leaving the rest to depth
/// snapshots.
pub const PAGES_PER_MINUTE: u32 = 120;
/// Pages fetched back to back before the pace applies.
pub const PAGES_BURST: u32 = 10;

const _: () = assert!(
    (PAGES_PER_MINUTE as u64) * 25 < crate::binance::rest::DEFAULT_WEIGHT_BUDGET as u64,
    "trade pages leave room in the weight budget for depth snapshots"
);

/// Consumers as a bit set: bit `c` is consumer `c` (at most 64 consumers).
pub type Consumers = u64;

/// A page to fetch: `limit` trades of `symbol` from `from_id` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// Symbol index.
    pub symbol: u16,
    /// First id asked for.
    pub from_id: i64,
    /// Ids asked for, 1..=[`PAGE_IDS_MAX`].
    pub limit: u32,
}

/// Trades `from..=to` of `symbol` to hand to `consumers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Symbol index.
    pub symbol: u16,
    /// First id.
    pub from: i64,
    /// Last id.
    pub to: i64,
    /// Who gets them.
    pub consumers: Consumers,
    /// When the request was made (monotonic ns): time to repair is measured from here.
    pub requested_ns: u64,
}

/// One outstanding request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    symbol: u16,
    /// The next id still missing; the request is done once `from > to`.
    from: i64,
    to: i64,
    consumers: Consumers,
    since_ns: u64,
}

/// A pace for page fetches (the generic cell rate algorithm): at most one page per
/// `interval_ns` sustained, with bursts of `burst` pages.
#[derive(Clone, Copy, Debug)]
struct Pace {
    interval_ns: u64,
    /// How far ahead of now the theoretical arrival time may run: `(burst - 1) * interval`.
    tolerance_ns: u64,
    /// When the next page would be due at the sustained rate.
    due_ns: u64,
}

impl Pace {
    fn allows(&self, now_ns: u64) -> bool {
        self.due_ns <= now_ns.saturating_add(self.tolerance_ns)
    }

    fn take(&mut self, now_ns: u64) {
        self.due_ns = self.due_ns.max(now_ns).saturating_add(self.interval_ns);
    }
}

/// The backfill plan of every symbol.
#[derive(Debug)]
pub struct Backfill {
    /// Outstanding requests, oldest first.
    requests: VecDeque<Request>,
    /// Symbols with a page in flight.
    in_flight: Vec<u16>,
    /// Per symbol: no fetch before this time (after a failure).
    not_before_ns: Vec<(u16, u64)>,
    give_up_after_ns: u64,
    /// Ids asked for since the start, and ids delivered (per consumer counted once each).
    requested_ids: u64,
    /// The page pace; `None`: pages as fast as they come back.
    pace: Option<Pace>,
}

impl Backfill {
    /// A plan that abandons a request `give_up_after_ns` after it was made.
    pub fn new(give_up_after_ns: u64) -> Backfill {
        Backfill {
            requests: VecDeque::new(),
            in_flight: Vec::new(),
            not_before_ns: Vec::new(),
            give_up_after_ns,
            requested_ids: 0,
            pace: None,
        }
    }

    /// Paces pages to at most `pages_per_minute` sustained, after `burst` back to back (a
    /// zero rate leaves them unpaced).
    pub fn with_pace(mut self, pages_per_minute: u32, burst: u32) -> Backfill {
        self.pace = (pages_per_minute > 0).then(|| {
            let interval_ns = 60_000_000_000 / u64::from(pages_per_minute);
            Pace {
                interval_ns,
                tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)),
                due_ns: 0,
            }
        });
        self
    }

    /// Ids `from..=to` of `symbol` are missing for `consumers`. Ignored when empty.
    pub fn request(&mut self, symbol: u16, from: i64, to: i64, consumers: Consumers, now_ns: u64) {
        if from > to || consumers == 0 {
            return;
        }
        self.requested_ids = self
            .requested_ids
            .saturating_add(u64::try_from(i128::from(to) - i128::from(from) + 1).unwrap_or(0));
        self.requests.push_back(Request {
            symbol,
            from,
            to,
            consumers,
            since_ns: now_ns,
        });
    }

    /// Outstanding requests.
    pub fn pending(&self) -> usize {
        self.requests.len()
    }

    /// Ids requested since the start.
    pub fn requested_ids(&self) -> u64 {
        self.requested_ids
    }

    /// The next page to fetch at `now_ns`: for the oldest request whose symbol has no page in
    /// flight and no retry pending. The page is marked in flight until [`Backfill::fetched`]
    /// or [`Backfill::failed`].
    pub fn next_fetch(&mut self, now_ns: u64) -> Option<Fetch> {
        if self.pace.is_some_and(|p| !p.allows(now_ns)) {
            return None;
        }
        let request = self.requests.iter().find(|r| {
            !self.in_flight.contains(&r.symbol)
                && self
                    .not_before_ns
                    .iter()
                    .all(|&(s, t)| s != r.symbol || t <= now_ns)
        })?;
        let symbol = request.symbol;
        // The lowest missing id of the symbol, so one page serves every request it can.
        let from_id = self
            .requests
            .iter()
            .filter(|r| r.symbol == symbol)
            .map(|r| r.from)
            .min()
            .unwrap_or(request.from);
        // Up to the last id any request of the symbol still misses within one page: a page
        // weighs the same whatever its length, so many small gaps share one.
        let page_end = from_id.saturating_add(i64::from(PAGE_IDS_MAX) - 1);
        let to = self
            .requests
            .iter()
            .filter(|r| r.symbol == symbol && r.from <= page_end)
            .map(|r| r.to.min(page_end))
            .max()
            .unwrap_or(request.to);
        let span = i128::from(to) - i128::from(from_id) + 1;
        let limit = u32::try_from(span.clamp(1, i128::from(PAGE_IDS_MAX))).unwrap_or(PAGE_IDS_MAX);
        self.in_flight.push(symbol);
        self.not_before_ns.retain(|&(s, _)| s != symbol);
        if let Some(pace) = self.pace.as_mut() {
            pace.take(now_ns);
        }
        Some(Fetch {
            symbol,
            from_id,
            limit,
        })
    }

    /// A page came back with trades `first..=last` (contiguous ids; `None` when it was empty).
    /// Appends what to deliver to whom to `out`, in id order per request, and shrinks the
    /// requests it served. An empty page, or one that starts after the first id asked for
    /// (ids Binance no longer serves), leaves the rest to retry or to give up.
    pub fn fetched(&mut self, fetch: Fetch, got: Option<(i64, i64)>, out: &mut Vec<Delivery>) {
        self.in_flight.retain(|&s| s != fetch.symbol);
        let Some((first, last)) = got else {
            return;
        };
        for request in self
            .requests
            .iter_mut()
            .filter(|r| r.symbol == fetch.symbol)
        {
            let from = request.from.max(first);
            let to = request.to.min(last);
            if from > to || from != request.from {
                // Nothing of this request, or not its next id: a hole stays before it.
                continue;
            }
            out.push(Delivery {
                symbol: request.symbol,
                from,
                to,
                consumers: request.consumers,
                requested_ns: request.since_ns,
            });
            request.from = to.saturating_add(1);
        }
        self.requests.retain(|r| r.from <= r.to);
    }

    /// The page failed; no fetch for its symbol before `retry_at_ns`.
    pub fn failed(&mut self, fetch: Fetch, retry_at_ns: u64) {
        self.in_flight.retain(|&s| s != fetch.symbol);
        self.not_before_ns.retain(|&(s, _)| s != fetch.symbol);
        self.not_before_ns.push((fetch.symbol, retry_at_ns));
    }

    /// Abandons requests older than the give-up bound at `now_ns`, appending them (what was
    /// still missing) to `out`.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Delivery>) {
        let bound = self.give_up_after_ns;
        self.requests.retain(|r| {
            let overdue = now_ns.saturating_sub(r.since_ns) >= bound;
            if overdue {
                out.push(Delivery {
                    symbol: r.symbol,
                    from: r.from,
                    to: r.to,
                    consumers: r.consumers,
                    requested_ns: r.since_ns,
                });
            }
            !overdue
        });
    }

    /// Drops every request of `symbol` (it was removed), appending them to `out`.
    pub fn forget(&mut self, symbol: u16, out: &mut Vec<Delivery>) {
        self.requests.retain(|r| {
            if r.symbol == symbol {
                out.push(Delivery {
                    symbol,
                    from: r.from,
                    to: r.to,
                    consumers: r.consumers,
                    requested_ns: r.since_ns,
                });
            }
            r.symbol != symbol
        });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ALL: Consumers = 0b11;

    #[test]
    fn a_gap_is_fetched_in_pages_and_delivered_to_those_who_lost_it() {
        let mut plan = Backfill::new(u64::MAX);
        plan.request(0, 101, 2600, ALL, 0);
        let mut out = Vec::new();
        let mut expected_from = 101;
        while let Some(fetch) = plan.next_fetch(0) {
            assert_eq!(fetch.from_id, expected_from);
            assert!(fetch.limit <= PAGE_IDS_MAX);
            assert_eq!(plan.next_fetch(0), None, "one page in flight per symbol");
            let last = fetch.from_id + i64::from(fetch.limit) - 1;
            plan.fetched(fetch, Some((fetch.from_id, last)), &mut out);
            expected_from = last + 1;
        }
        assert_eq!(expected_from, 2601);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0],
            Delivery {
                symbol: 0,
                from: 101,
                to: 1100,
                consumers: ALL,
                requested_ns: 0,
            }
        );
        assert_eq!(out[2].to, 2600);
        assert_eq!(plan.pending(), 0);
    }

    #[test]
    fn overlapping_requests_of_different_consumers_each_get_their_part_once() {
        let mut plan = Backfill::new(u64::MAX);
        plan.request(3, 10, 20, 0b01, 0);
        plan.request(3, 15, 30, 0b10, 0);
        let fetch = plan.next_fetch(0).expect("a page");
        assert_eq!(
            (fetch.from_id, fetch.limit),
            (10, 21),
            "one page for both requests"
        );
        let mut out = Vec::new();
        // Binance returns a full page past what was asked: harmless, nothing beyond 30 goes.
        plan.fetched(fetch, Some((10, 40)), &mut out);
        assert_eq!(
            out,
            vec![
                Delivery {
                    symbol: 3,
                    from: 10,
                    to: 20,
                    consumers: 0b01,
                    requested_ns: 0,
                },
                Delivery {
                    symbol: 3,
                    from: 15,
                    to: 30,
                    consumers: 0b10,
                    requested_ns: 0,
                },
            ]
        );
        assert_eq!(plan.pending(), 0);
    }

    #[test]
    fn separate_gaps_of_a_symbol_share_one_page_within_its_length() {
        let mut plan = Backfill::new(u64::MAX);
        plan.request(0, 100, 101, ALL, 0);
        plan.request(0, 150, 150, ALL, 1);
        plan.request(0, 2000, 2001, ALL, 2);
        plan.request(1, 7, 7, ALL, 3);
        let fetch = plan.next_fetch(5).expect("a page");
        assert_eq!((fetch.symbol, fetch.from_id, fetch.limit), (0, 100, 51));
        let mut out = Vec::new();
        plan.fetched(fetch, Some((100, 150)), &mut out);
        let served: Vec<(i64, i64)> = out.iter().map(|d| (d.from, d.to)).collect();
        assert_eq!(served, vec![(100, 101), (150, 150)]);
        assert_eq!(plan.pending(), 2, "the far gap and the other symbol wait");
        let next = plan.next_fetch(5).expect("a page");
        assert_eq!((next.symbol, next.from_id, next.limit), (0, 2000, 2));
    }

    #[test]
    fn pages_come_in_a_burst_then_at_the_pace_and_gaps_pile_up_meanwhile() {
        // 60 pages a minute: one a second after a burst of 3.
        let mut plan = Backfill::new(u64::MAX).with_pace(60, 3);
        let second = 1_000_000_000;
        let mut out = Vec::new();
        for at in 0..3 {
            plan.request(0, 10 * at + 1, 10 * at + 2, ALL, 0);
            let fetch = plan.next_fetch(0).expect("within the burst");
            plan.fetched(fetch, Some((fetch.from_id, 10 * at + 2)), &mut out);
        }
        plan.request(0, 100, 100, ALL, 0);
        assert_eq!(plan.next_fetch(0), None, "the burst is spent");
        plan.request(0, 150, 151, ALL, 1);
        assert_eq!(plan.next_fetch(second - 1), None);
        let fetch = plan.next_fetch(second).expect("a second later");
        assert_eq!(
            (fetch.from_id, fetch.limit),
            (100, 52),
            "both gaps in one page"
        );
        assert_eq!(plan.next_fetch(second), None);
        // Idle time refills the burst, never beyond it.
        plan.fetched(fetch, Some((100, 151)), &mut out);
        for at in 0..5 {
            plan.request(1, at, at, ALL, 0);
        }
        let mut fetched = 0;
        while let Some(fetch) = plan.next_fetch(100 * second) {
            plan.fetched(fetch, Some((fetch.from_id, fetch.from_id)), &mut out);
            fetched += 1;
        }
        assert_eq!(fetched, 3);
    }

    #[test]
    fn a_failed_page_waits_for_its_retry_time_while_other_symbols_go_on() {
        let mut plan = Backfill::new(u64::MAX);
        plan.request(1, 5, 9, ALL, 0);
        plan.request(2, 7, 8, ALL, 0);
        let first = plan.next_fetch(0).expect("symbol 1");
        plan.failed(first, 1_000);
        let other = plan.next_fetch(10).expect("symbol 2 is not held back");
        assert_eq!(other.symbol, 2);
        assert_eq!(plan.next_fetch(500), None);
        assert_eq!(plan.next_fetch(1_000).map(|f| f.symbol), Some(1));
    }

    #[test]
    fn a_page_that_starts_late_serves_nothing_and_old_requests_are_given_up() {
        let mut plan = Backfill::new(1_000);
        plan.request(0, 5, 9, ALL, 0);
        let fetch = plan.next_fetch(0).expect("a page");
        let mut out = Vec::new();
        plan.fetched(fetch, Some((7, 9)), &mut out);
        assert!(
            out.is_empty(),
            "ids 5 and 6 are not in the page: no out-of-order delivery"
        );
        let again = plan.next_fetch(0).expect("again");
        plan.fetched(again, None, &mut out);
        assert!(out.is_empty());
        plan.expire(999, &mut out);
        assert!(out.is_empty());
        plan.expire(1_000, &mut out);
        assert_eq!(
            out,
            vec![Delivery {
                symbol: 0,
                from: 5,
                to: 9,
                consumers: ALL,
                requested_ns: 0,
            }]
        );
        assert_eq!(plan.pending(), 0);
    }

    #[test]
    fn forgetting_a_symbol_reports_what_it_still_missed() {
        let mut plan = Backfill::new(u64::MAX);
        plan.request(4, 1, 2, ALL, 0);
        plan.request(5, 1, 2, ALL, 0);
        let mut out = Vec::new();
        plan.forget(4, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(plan.pending(), 1);
    }

    proptest! {
        /// Random gaps for random consumers, pages of random sizes: every consumer receives each
        /// id it lost exactly once, and nothing it did not lose.
        #[test]
        fn every_lost_id_reaches_each_consumer_that_lost_it_exactly_once(
            gaps in proptest::collection::vec((0i64..3000, 1i64..1500, 1u64..4), 1..12),
            extra in proptest::collection::vec(0i64..1200, 1..50),
        ) {
            let mut plan = Backfill::new(u64::MAX);
            let mut expected = std::collections::BTreeMap::<(u64, i64), u32>::new();
            for &(from, len, consumers) in &gaps {
                plan.request(0, from, from + len - 1, consumers, 0);
                for c in 0..2u64 {
                    if consumers & (1 << c) != 0 {
                        for id in from..from + len {
                            *expected.entry((c, id)).or_default() += 1;
                        }
                    }
                }
            }
            let mut got = std::collections::BTreeMap::<(u64, i64), u32>::new();
            let mut out = Vec::new();
            let mut step = 0;
            while let Some(fetch) = plan.next_fetch(0) {
                let more = extra[step % extra.len()];
                step += 1;
                let last = fetch.from_id + i64::from(fetch.limit) - 1 + more;
                plan.fetched(fetch, Some((fetch.from_id, last)), &mut out);
                prop_assert!(step < 10_000, "the plan makes progress");
            }
            for d in out {
                for c in 0..2u64 {
                    if d.consumers & (1 << c) != 0 {
                        for id in d.from..=d.to {
                            *got.entry((c, id)).or_default() += 1;
                        }
                    }
                }
            }
            // Overlapping requests of one consumer are served once per request, so compare
            // the set of ids and that nothing was delivered beyond what was asked for.
            let expected_ids: Vec<_> = expected.keys().collect();
            let got_ids: Vec<_> = got.keys().collect();
            prop_assert_eq!(expected_ids, got_ids);
            for (key, n) in &got {
                prop_assert!(*n <= expected[key], "{key:?} delivered {n} times");
            }
        }
    }
}
