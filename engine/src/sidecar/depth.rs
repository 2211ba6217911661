//! Which depth snapshot the sidecar fetches next, and how deep: the pure schedule behind the
//! consumers' [`BookRequest`]s. Times are Unix milliseconds (Binance counts request weight in
//! clock minutes, PROTOCOL.md 4.3).
//!
//! - **Weight budget.** Every fetch is charged its weight ([`depth_weight`]) in the current
//!   minute before it is sent, and nothing is sent past the budget (Binance allows 6000 per
//!   minute and IP; the REST client's default budget leaves a margin). The used weight Binance
//!   reports on each response is taken in when it is higher than the plan's own count (other
//!   requests from this IP). A 429 or 418 holds every fetch until its `Retry-After`.
//! - **Depth by pressure, spending paced.** A sync asks for `limit` levels at most and
//!   `min_limit` at least. A 5000-level snapshot weighs 250, so 20 of them use a minute's
//!   budget: spent at once, the next sync would wait for the next minute. So the budget is
//!   paced: by a time `t` into the minute, at most `budget x (t + H) / (60 s + H)` may be
//!   spent (`H` = [`SYNC_HORIZON_S`]: a burst's worth is there at once, the whole budget only
//!   at the minute's end), and each queued sync gets the deepest limit whose weight fits its
//!   share of what the pace allows now, else the cheapest (which is always sent while the
//!   minute's budget has room). With many symbols syncing at once (start-up, a reconnect) or
//!   books re-syncing often, snapshots get shallower instead of later, so no symbol waits
//!   minutes. A shallower snapshot only means the book re-syncs sooner if the market moves
//!   past its edge ([`crate::book`]).
//! - **Bounded concurrency.** At most `concurrency` fetches are in flight.
//! - **Syncs first.** A consistency check is fetched only when no sync is ready; a failed
//!   sync is retried (after a delay), a failed check is not (the next one comes).

use std::collections::VecDeque;

use crate::binance::weights::depth_weight;
use crate::feed::event::{BookRequest, Purpose};

/// Everything queued should be fetched within this many seconds of budget.
pub const SYNC_HORIZON_S: u32 = 10;
/// One rate-limit window (a clock minute).
const WINDOW_MS: i64 = 60_000;
/// The `/api/v3/depth` limits where the weight steps up: (limit, weight) 100: 5, 500: 25,
/// 1000: 50, 5000: 250.
const DEPTH_TIERS: [u32; 4] = [5000, 1000, 500, 100];

/// One request waiting to be fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    /// The consumer whose repair ring gets the snapshot.
    pub consumer: usize,
    /// What it asked for.
    pub request: BookRequest,
    /// Failed fetches so far.
    pub failures: u32,
    /// Not fetched before this time.
    pub not_before_ms: i64,
}

/// A fetch to start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The job.
    pub job: Job,
    /// The `limit` to fetch with (charged in the budget already).
    pub limit: u32,
}

/// The schedule of depth snapshot fetches.
#[derive(Debug)]
pub struct DepthPlan {
    budget: u32,
    concurrency: usize,
    window: i64,
    used: u32,
    hold_until_ms: i64,
    syncs: VecDeque<Job>,
    checks: VecDeque<Job>,
    in_flight: usize,
}

impl DepthPlan {
    /// A plan spending at most `budget` weight per minute, `concurrency` fetches at once.
    pub fn new(budget: u32, concurrency: usize) -> DepthPlan {
        DepthPlan {
            budget,
            concurrency: concurrency.max(1),
            window: i64::MIN,
            used: 0,
            hold_until_ms: 0,
            syncs: VecDeque::new(),
            checks: VecDeque::new(),
            in_flight: 0,
        }
    }

    /// Queues `request` of `consumer` (a request already queued for the same consumer,
    /// symbol and purpose is not queued twice).
    pub fn request(&mut self, consumer: usize, request: BookRequest, now_ms: i64) {
        let queue = match request.purpose {
            Purpose::Sync => &mut self.syncs,
            Purpose::Check => &mut self.checks,
        };
        let queued = queue
            .iter()
            .any(|j| j.consumer == consumer && j.request.symbol == request.symbol);
        if !queued {
            queue.push_back(Job {
                consumer,
                request,
                failures: 0,
                not_before_ms: now_ms,
            });
        }
    }

    /// Requests queued and fetches in flight.
    pub fn pending(&self) -> usize {
        self.syncs.len() + self.checks.len() + self.in_flight
    }

    /// Fetches in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The weight charged in the current minute, as far as the plan knows.
    pub fn used(&self, now_ms: i64) -> u32 {
        if now_ms.div_euclid(WINDOW_MS) == self.window {
            self.used
        } else {
            0
        }
    }

    fn roll(&mut self, now_ms: i64) {
        let window = now_ms.div_euclid(WINDOW_MS);
        if window != self.window {
            self.window = window;
            self.used = 0;
        }
    }

    /// The next fetch to start now, charged in the budget, or `None` (nothing ready, all
    /// slots busy, held after a 429, or the minute's budget spent).
    pub fn next(&mut self, now_ms: i64) -> Option<Dispatch> {
        if self.in_flight >= self.concurrency || now_ms < self.hold_until_ms {
            return None;
        }
        self.roll(now_ms);
        let ready = |j: &Job| j.not_before_ms <= now_ms;
        let (sync, at) = match self.syncs.iter().position(ready) {
            Some(at) => (true, at),
            None => (false, self.checks.iter().position(ready)?),
        };
        let job = if sync {
            self.syncs[at]
        } else {
            self.checks[at]
        };
        let limit = if sync {
            self.sync_limit(job.request, now_ms)
        } else {
            job.request.limit
        };
        let weight = depth_weight(limit);
        if self.used.saturating_add(weight) > self.budget {
            return None;
        }
        self.used += weight;
        self.in_flight += 1;
        if sync {
            self.syncs.remove(at);
        } else {
            self.checks.remove(at);
        }
        Some(Dispatch { job, limit })
    }

    /// The deepest limit within `request`'s bounds whose weight fits one queued sync's share
    /// of what the pace allows now (see the module documentation), else the cheapest.
    fn sync_limit(&self, request: BookRequest, now_ms: i64) -> u32 {
        let queued = u64::try_from(self.syncs.len().max(1)).unwrap_or(u64::MAX);
        let into_minute = u64::try_from(now_ms.rem_euclid(WINDOW_MS)).unwrap_or(0);
        let horizon_ms = u64::from(SYNC_HORIZON_S) * 1000;
        let window_ms = WINDOW_MS.unsigned_abs();
        let allowed =
            u64::from(self.budget) * (into_minute + horizon_ms) / (window_ms + horizon_ms);
        let share = allowed.saturating_sub(u64::from(self.used)) / queued;
        let share = u32::try_from(share).unwrap_or(u32::MAX);
        let floor = request.min_limit.min(request.limit);
        let candidates = std::iter::once(request.limit).chain(
            DEPTH_TIERS
                .into_iter()
                .filter(|&t| t < request.limit && t >= floor),
        );
        let mut cheapest = request.limit;
        for limit in candidates {
            if depth_weight(limit) <= share {
                return limit;
            }
            cheapest = limit;
        }
        cheapest
    }

    /// A fetch ended (whatever its outcome).
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A fetch of `job` failed: a sync is queued again (first in line) from `retry_at_ms`;
    /// returns whether it was (a check is dropped).
    pub fn failed(&mut self, mut job: Job, retry_at_ms: i64) -> bool {
        if job.request.purpose == Purpose::Check {
            return false;
        }
        job.failures = job.failures.saturating_add(1);
        job.not_before_ms = retry_at_ms;
        self.syncs.push_front(job);
        true
    }

    /// Binance reported `used` weight in the minute of `now_ms` (all of this IP's requests).
    pub fn observe(&mut self, used: u32, now_ms: i64) {
        self.roll(now_ms);
        self.used = self.used.max(used);
    }

    /// Nothing is sent before `until_ms` (a 429 or 418's `Retry-After`).
    pub fn hold(&mut self, until_ms: i64) {
        self.hold_until_ms = self.hold_until_ms.max(until_ms);
    }

    /// Drops everything queued and forgets the fetches in flight (the run stops; their
    /// tasks are aborted).
    pub fn clear(&mut self) {
        self.syncs.clear();
        self.checks.clear();
        self.in_flight = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(symbol: u16) -> BookRequest {
        BookRequest {
            symbol,
            purpose: Purpose::Sync,
            limit: 5000,
            min_limit: 20,
        }
    }

    fn check(symbol: u16) -> BookRequest {
        BookRequest {
            symbol,
            purpose: Purpose::Check,
            limit: 100,
            min_limit: 20,
        }
    }

    /// Drains every fetch the plan allows at `now`, finishing each at once.
    fn drain(plan: &mut DepthPlan, now: i64) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        while let Some(d) = plan.next(now) {
            out.push((d.job.request.symbol, d.limit));
            plan.finished();
        }
        out
    }

    #[test]
    fn a_few_symbols_get_the_deepest_snapshot() {
        let mut plan = DepthPlan::new(5000, 4);
        plan.request(0, sync(0), 0);
        plan.request(0, sync(1), 0);
        plan.request(0, sync(1), 0);
        assert_eq!(plan.pending(), 2, "a request queued twice is kept once");
        assert_eq!(drain(&mut plan, 0), [(0, 5000), (1, 5000)]);
        assert_eq!(plan.used(0), 500);
    }

    /// 1000 symbols syncing at once: at 5000 levels (weight 250) that is 50 minutes of budget;
    /// at 100 (weight 5) the whole budget serves them all in a minute, the first ones at once.
    #[test]
    fn many_symbols_share_the_budget_with_shallower_snapshots() {
        let mut plan = DepthPlan::new(5000, 1000);
        for symbol in 0..1000 {
            plan.request(0, sync(symbol), 0);
        }
        let first = drain(&mut plan, 0);
        assert!(
            first.iter().all(|&(_, limit)| limit == 100),
            "{:?}",
            &first[..5]
        );
        assert_eq!(first.len(), 1000, "5 x 1000 = 5000: all fit this minute");
        assert_eq!(plan.used(0), 5000);
        // Nothing more this minute, even a cheap check.
        plan.request(0, check(7), 0);
        assert_eq!(plan.next(59_999), None);
        assert_eq!(plan.next(60_000).map(|d| d.limit), Some(100));
    }

    #[test]
    fn the_budget_holds_fetches_to_the_next_minute() {
        let mut plan = DepthPlan::new(5000, 64);
        // Other requests of this IP used 4990 of the minute: two cheapest fetches fit.
        plan.observe(4_990, 1_000);
        for symbol in 0..3 {
            plan.request(0, sync(symbol), 1_000);
        }
        assert_eq!(drain(&mut plan, 1_000), [(0, 100), (1, 100)]);
        assert_eq!(plan.used(1_000), 5_000);
        assert!(plan.next(59_999).is_none());
        assert_eq!(
            drain(&mut plan, 60_000),
            [(2, 5000)],
            "a new minute, a new budget"
        );
        assert_eq!(plan.pending(), 0);
    }

    #[test]
    fn concurrency_is_bounded_and_syncs_come_before_checks() {
        let mut plan = DepthPlan::new(5000, 2);
        plan.request(0, check(9), 0);
        plan.request(1, sync(1), 0);
        plan.request(1, sync(2), 0);
        plan.request(1, sync(3), 0);
        let a = plan.next(0).expect("a fetch");
        let b = plan.next(0).expect("a second");
        assert_eq!(plan.next(0), None, "two in flight at most");
        assert_eq!((a.job.request.symbol, b.job.request.symbol), (1, 2));
        assert_eq!(a.job.consumer, 1);
        plan.finished();
        assert_eq!(plan.next(0).map(|d| d.job.request.symbol), Some(3));
        plan.finished();
        plan.finished();
        let c = plan.next(0).expect("the check, last");
        assert_eq!((c.job.request.purpose, c.limit), (Purpose::Check, 100));
    }

    #[test]
    fn failures_retry_syncs_later_and_drop_checks() {
        let mut plan = DepthPlan::new(5000, 4);
        plan.request(0, sync(1), 0);
        let d = plan.next(0).expect("a fetch");
        plan.finished();
        assert!(plan.failed(d.job, 500));
        assert_eq!(plan.next(499), None, "not before its retry time");
        let again = plan.next(500).expect("retried");
        assert_eq!(again.job.failures, 1);
        plan.finished();
        plan.request(0, check(2), 0);
        let c = plan.next(600).expect("a check");
        plan.finished();
        assert!(!plan.failed(c.job, 700));
        assert_eq!(plan.pending(), 0);
    }

    #[test]
    fn a_429_holds_everything_and_reported_weight_counts() {
        let mut plan = DepthPlan::new(5000, 4);
        plan.request(0, sync(1), 0);
        plan.hold(2_000);
        assert_eq!(plan.next(1_999), None);
        // Other requests of this IP took 4900 of the minute: only the cheapest fits now.
        plan.observe(4_900, 2_000);
        assert_eq!(plan.next(2_000).map(|d| d.limit), Some(100));
        assert_eq!(plan.used(2_000), 4_905);
    }

    /// A book re-syncing every half second must not burn the minute's budget in its first
    /// seconds and then wait for the next minute: the pace makes its snapshots shallower.
    #[test]
    fn steady_resyncs_are_paced_over_the_minute() {
        let mut plan = DepthPlan::new(5000, 4);
        let mut limits = Vec::new();
        for step in 0..120 {
            let now = step * 500;
            plan.request(0, sync(1), now);
            let d = plan
                .next(now)
                .unwrap_or_else(|| panic!("a wait at {now}: {limits:?}"));
            plan.finished();
            limits.push(d.limit);
        }
        assert_eq!(limits[0], 5000, "the first one is deep");
        assert!(
            limits.contains(&500) || limits.contains(&1000),
            "{limits:?}"
        );
        assert!(plan.used(59_500) <= 5000);
    }

    #[test]
    fn the_floor_is_the_published_depth() {
        let mut plan = DepthPlan::new(5000, 1000);
        let deep = BookRequest {
            min_limit: 700,
            ..sync(0)
        };
        for symbol in 0..100 {
            plan.request(0, BookRequest { symbol, ..deep }, 0);
        }
        let d = plan.next(0).expect("a fetch");
        assert_eq!(
            d.limit, 1000,
            "never below 700 levels: the cheapest tier above it"
        );
        let small = BookRequest {
            symbol: 500,
            purpose: Purpose::Sync,
            limit: 30,
            min_limit: 20,
        };
        let mut plan = DepthPlan::new(5000, 4);
        plan.request(0, small, 0);
        assert_eq!(
            plan.next(0).map(|d| d.limit),
            Some(30),
            "never above the asked limit"
        );
    }
}
