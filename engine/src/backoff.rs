//! Retry pacing, pure: time is passed in, nothing sleeps here. The one home of backoff for
//! every thread that retries (feed reconnects, Kinesis and Redis writers).
//!
//! - [`Backoff`]: the delay before the next reconnect, exponential backoff with "full jitter"
//!   (AWS Architecture Blog, "Exponential Backoff And Jitter"): attempt `n` (from 0) waits a
//!   uniform random time in `[0, min(max, initial * 2^n)]`. Jitter spreads the readers that
//!   lost their connections at the same moment, so they do not all come back at once.
//! - [`AttemptBudget`]: Binance allows "300 connection attempts every 5 minutes per IP address"
//!   (PROTOCOL.md 3.8). The budget keeps the times of the attempts in the sliding window and
//!   refuses one more, telling how long until the oldest leaves the window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rng::Rng;

/// Binance's connection attempts allowed per IP in [`BINANCE_ATTEMPTS_WINDOW`].
pub const BINANCE_ATTEMPTS_MAX: u32 = 300;

/// The sliding window of [`BINANCE_ATTEMPTS_MAX`]: five minutes.
pub const BINANCE_ATTEMPTS_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Reconnect delays: exponential backoff with full jitter, from a seeded generator so a run is
/// reproducible.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// The cap of the first delay.
    initial: Duration,
    /// The cap of every delay.
    max: Duration,
    /// Delays handed out since the last reset; saturates at `u32::MAX`.
    attempt: u32,
    rng: Rng,
}

impl Backoff {
    /// Delays capped at `initial`, then doubling per attempt up to `max` (an `initial` above
    /// `max` is simply capped at `max`), jittered by a generator seeded with `seed`.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max,
            attempt: 0,
            rng: Rng::new(seed),
        }
    }

    /// The delay before the next attempt, uniform in `[0, cap]` with
    /// `cap = min(max, initial * 2^attempt)`; then counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let cap_ns = u64::try_from(self.cap().as_nanos()).unwrap_or(u64::MAX);
        let delay_ns = self.rng.below(cap_ns.saturating_add(1));
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_nanos(delay_ns)
    }

    /// Back to the first delay, after a connection that delivered data.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Delays handed out since creation or the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The cap of the current attempt, `min(max, initial * 2^attempt)`, without overflow.
    fn cap(&self) -> Duration {
        cap(self.initial, self.max, self.attempt)
    }
}

/// `min(max, initial * 2^attempt)`, without overflow.
fn cap(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let doubled = 1u32
        .checked_shl(attempt)
        .and_then(|factor| initial.checked_mul(factor));
    doubled.map_or(max, |cap| cap.min(max))
}

/// The shortest delay [`jittered`] hands out: a retry loop never spins.
pub const JITTER_FLOOR: Duration = Duration::from_millis(1);

/// A full-jitter delay for attempt `attempt` (0-based) without keeping state: uniform in
/// `[JITTER_FLOOR, max(JITTER_FLOOR, min(max, initial * 2^attempt))]`. For loops that count
/// their attempts themselves (the sinks' retries).
pub fn jittered(rng: &mut Rng, initial: Duration, max: Duration, attempt: u32) -> Duration {
    let floor_us = JITTER_FLOOR.as_micros() as u64;
    let cap_us = u64::try_from(cap(initial, max, attempt).as_micros())
        .unwrap_or(u64::MAX)
        .max(floor_us);
    Duration::from_micros(rng.below(cap_us).max(floor_us))
}

/// At most `max` connection attempts in any sliding `window`.
#[derive(Clone, Debug)]
pub struct AttemptBudget {
    /// The attempts allowed per window; at least 1.
    max: u32,
    window: Duration,
    /// Times of the attempts in the window, oldest first, never decreasing; at most `max`
    /// long, in a buffer allocated once with capacity `max`.
    attempts: VecDeque<Instant>,
}

impl AttemptBudget {
    /// A budget of `max` attempts per sliding `window`. Cold: allocates `max` slots.
    ///
    /// # Panics
    /// If `max` is 0: no attempt could ever be made.
    pub fn new(max: u32, window: Duration) -> AttemptBudget {
        assert!(max > 0, "an attempt budget of 0 never allows a connection");
        AttemptBudget {
            max,
            window,
            attempts: VecDeque::with_capacity(max as usize),
        }
    }

    /// Takes one attempt at `now`, or says how long until one is allowed (the oldest attempt
    /// leaves the window). A refusal takes nothing. A `now` earlier than the last attempt
    /// counts as the last attempt's time, so the clock never runs backwards here.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        let now = self.attempts.back().map_or(now, |&last| now.max(last));
        self.forget_before(now);
        match self.attempts.front() {
            Some(&oldest) if self.attempts.len() >= self.max as usize => {
                let frees_at = oldest.checked_add(self.window);
                Err(frees_at.map_or(self.window, |at| at.saturating_duration_since(now)))
            }
            _ => {
                self.attempts.push_back(now);
                Ok(())
            }
        }
    }

    /// Drops the attempts that have left the window at `now`: one made at `t` counts in
    /// `[t, t + window)`.
    fn forget_before(&mut self, now: Instant) {
        while let Some(&oldest) = self.attempts.front() {
            if now.saturating_duration_since(oldest) < self.window {
                break;
            }
            self.attempts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITIAL: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);
    const SEEDS: u64 = 64;

    /// The cap of attempt `attempt` with [`INITIAL`] and [`MAX`].
    fn cap(attempt: u32) -> Duration {
        INITIAL.saturating_mul(1 << attempt.min(20)).min(MAX)
    }

    fn delays(seed: u64, count: usize) -> Vec<Duration> {
        let mut backoff = Backoff::new(INITIAL, MAX, seed);
        (0..count).map(|_| backoff.next_delay()).collect()
    }

    #[test]
    fn delays_stay_under_a_cap_that_doubles_up_to_max() {
        for seed in 0..SEEDS {
            for (attempt, delay) in (0u32..).zip(delays(seed, 40)) {
                assert!(
                    delay <= cap(attempt),
                    "seed {seed} attempt {attempt}: {delay:?}"
                );
            }
        }
        // Full jitter spreads over the whole range: across seeds, each attempt's largest delay
        // comes close to its cap and the smallest close to 0.
        for attempt in [0, 3, 8, 20] {
            let cap = cap(attempt);
            let nth: Vec<Duration> = (0..SEEDS)
                .map(|s| delays(s, 21)[attempt as usize])
                .collect();
            assert!(
                nth.iter().max() > Some(&(cap * 3 / 4)),
                "attempt {attempt}: {nth:?}"
            );
            assert!(
                nth.iter().min() < Some(&(cap / 4)),
                "attempt {attempt}: {nth:?}"
            );
        }
        assert_eq!((cap(8), cap(9)), (INITIAL * 256, MAX));
    }

    #[test]
    fn attempts_count_and_reset_starts_over() {
        let mut backoff = Backoff::new(INITIAL, MAX, 7);
        for _ in 0..10 {
            let _ = backoff.next_delay();
        }
        assert_eq!(backoff.attempt(), 10);
        backoff.reset();
        assert_eq!(backoff.attempt(), 0);
        assert!(backoff.next_delay() <= INITIAL);
        assert_eq!(backoff.attempt(), 1);
    }

    #[test]
    fn many_attempts_never_overflow() {
        let mut backoff = Backoff::new(INITIAL, MAX, 1);
        for _ in 0..1_000 {
            assert!(backoff.next_delay() <= MAX);
        }
        assert_eq!(backoff.attempt(), 1_000);
        backoff.attempt = u32::MAX - 1;
        for _ in 0..3 {
            assert!(backoff.next_delay() <= MAX);
        }
        assert_eq!(backoff.attempt(), u32::MAX);
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX, 1);
        for _ in 0..70 {
            let _ = huge.next_delay();
        }
    }

    #[test]
    fn degenerate_bounds_are_capped() {
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO, 3);
        assert!((0..10).all(|_| zero.next_delay() == Duration::ZERO));
        let mut inverted = Backoff::new(MAX, INITIAL, 3);
        assert!((0..10).all(|_| inverted.next_delay() <= INITIAL));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        assert_eq!(delays(42, 20), delays(42, 20));
        assert_ne!(delays(42, 20), delays(43, 20));
    }

    #[test]
    fn the_binance_budget_refuses_the_301st_attempt_until_the_oldest_leaves() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut budget = AttemptBudget::new(BINANCE_ATTEMPTS_MAX, BINANCE_ATTEMPTS_WINDOW);
        for i in 0..u64::from(BINANCE_ATTEMPTS_MAX) {
            assert_eq!(budget.try_acquire(at(i)), Ok(()), "attempt {i}");
        }
        let window_ms = 5 * 60 * 1_000;
        assert_eq!(
            budget.try_acquire(at(1_000)),
            Err(Duration::from_millis(window_ms - 1_000))
        );
        assert_eq!(
            budget.try_acquire(at(window_ms - 1)),
            Err(Duration::from_millis(1))
        );
        // The attempt at 0 leaves the window at exactly `window`: one more is allowed, and the
        // next waits for the attempt at 1 ms.
        assert_eq!(budget.try_acquire(at(window_ms)), Ok(()));
        assert_eq!(
            budget.try_acquire(at(window_ms)),
            Err(Duration::from_millis(1))
        );
        assert_eq!(budget.try_acquire(at(window_ms + 1)), Ok(()));
        // Once the whole window has passed, a full budget is available again.
        let later = window_ms * 3;
        for i in 0..u64::from(BINANCE_ATTEMPTS_MAX) {
            assert_eq!(budget.try_acquire(at(later + i)), Ok(()), "attempt {i}");
        }
        assert!(budget.try_acquire(at(later + 300)).is_err());
    }

    #[test]
    fn the_budget_never_reallocates() {
        let start = Instant::now();
        let mut budget = AttemptBudget::new(3, Duration::from_secs(1));
        let capacity = budget.attempts.capacity();
        for ms in 0..5_000 {
            let _ = budget.try_acquire(start + Duration::from_millis(ms));
            assert!(budget.attempts.len() <= 3);
        }
        assert_eq!(budget.attempts.capacity(), capacity);
    }

    #[test]
    fn a_clock_going_backwards_does_not_panic_or_free_attempts() {
        let start = Instant::now();
        let late = start + Duration::from_secs(10);
        let mut budget = AttemptBudget::new(2, Duration::from_secs(1));
        assert_eq!(budget.try_acquire(late), Ok(()));
        assert_eq!(budget.try_acquire(start), Ok(()));
        assert_eq!(budget.try_acquire(start), Err(Duration::from_secs(1)));
    }

    #[test]
    #[should_panic(expected = "never allows a connection")]
    fn an_empty_budget_is_refused() {
        let _ = AttemptBudget::new(0, BINANCE_ATTEMPTS_WINDOW);
    }
}
