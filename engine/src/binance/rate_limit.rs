//! Binance's `REQUEST_WEIGHT` rules (PROTOCOL.md 4.3), shared by the REST client, which obeys
//! them, and the simulator, which enforces them:
//!
//! - weight is counted per IP in fixed minutes aligned to the clock (`ms / 60000`), and every
//!   response reports the minute's total in [`USED_WEIGHT_HEADER`];
//! - past [`REQUEST_WEIGHT_PER_MINUTE`], HTTP 429 with `Retry-After` in seconds; a client that
//!   keeps sending after a 429 is banned: HTTP 418, `Retry-After` to the ban's end. Bans last
//!   from [`BAN_FIRST_MS`] (2 minutes) to [`BAN_MAX_MS`] (3 days).
//!
//! The client's side: [`WeightWindow`] budgets requests locally, and [`hold_after`] turns a 429
//! or 418 into the wait during which the client sends nothing weighted.

use std::time::Duration;

/// Binance's `REQUEST_WEIGHT` limit per minute and IP.
pub const REQUEST_WEIGHT_PER_MINUTE: u32 = 6_000;
/// The response header carrying the weight used in the current minute.
pub const USED_WEIGHT_HEADER: &str = "X-MBX-USED-WEIGHT-1M";
/// The response header of a 429 or 418 saying how many seconds to wait.
pub const RETRY_AFTER_HEADER: &str = "Retry-After";
/// One rate-limit window; windows start at whole minutes of the clock.
pub const WINDOW_MS: i64 = 60_000;
/// HTTP status of "over the weight limit".
pub const STATUS_RATE_LIMITED: u16 = 429;
/// HTTP status of "this IP is banned".
pub const STATUS_BANNED: u16 = 418;
/// Requests the simulator lets a client send in a window after its first 429 there before
/// it bans it (Binance does not publish its number).
pub const REQUESTS_AFTER_429_MAX: u32 = 10;
/// The shortest Binance IP ban; also what a 418 without `Retry-After` is taken to mean.
pub const BAN_FIRST_MS: i64 = 2 * 60_000;
/// The longest Binance IP ban ("from 2 minutes to 3 days").
pub const BAN_MAX_MS: i64 = 3 * 24 * 3_600_000;
const _: () = assert!(
    BAN_FIRST_MS > WINDOW_MS,
    "a ban outlives the window that caused it"
);

/// The window (`ms / 60000`) `now_ms` falls in.
pub fn window_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(WINDOW_MS)
}

/// Time from `now_ms` to the start of the next window.
pub fn until_next_window(now_ms: i64) -> Duration {
    Duration::from_millis((WINDOW_MS - now_ms.rem_euclid(WINDOW_MS)).unsigned_abs())
}

/// A `Retry-After` value in whole seconds, as Binance sends it; `None` if absent or not one.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An `X-MBX-USED-WEIGHT-1M` value; `None` if absent or malformed (the local estimate stands).
pub fn parse_used_weight(value: Option<&str>) -> Option<u32> {
    value?.trim().parse().ok()
}

/// A wait a 429 or 418 imposes on every weighted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldRule {
    /// How long to send nothing weighted.
    pub retry_after: Duration,
    /// Whether it is an IP ban (418) rather than a 429.
    pub banned: bool,
}

/// The wait an answer of `status` imposes, received at `now_ms` with `Retry-After` parsed as
/// `retry_after`: a 429 without one waits for the next window, a 418 without one for the
/// shortest ban. `None` for every other status.
pub fn hold_after(status: u16, retry_after: Option<Duration>, now_ms: i64) -> Option<HoldRule> {
    match status {
        STATUS_RATE_LIMITED => Some(HoldRule {
            retry_after: retry_after.unwrap_or_else(|| until_next_window(now_ms)),
            banned: false,
        }),
        STATUS_BANNED => Some(HoldRule {
            retry_after: retry_after.unwrap_or(Duration::from_millis(BAN_FIRST_MS.unsigned_abs())),
            banned: true,
        }),
        _ => None,
    }
}

/// A request the local budget refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// The request's weight.
    pub weight: u32,
    /// The weight already used in this minute, as far as the client knows.
    pub used: u32,
    /// The budget per minute.
    pub budget: u32,
    /// Time to the next minute, when the count starts from 0 again.
    pub retry_after: Duration,
}

/// The weight used in the current minute, as far as a client knows: its own requests plus the
/// server's count when one arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightWindow {
    /// The window (`ms / 60000`) `used` belongs to.
    window: i64,
    used: u32,
}

impl Default for WeightWindow {
    fn default() -> WeightWindow {
        WeightWindow::new()
    }
}

impl WeightWindow {
    /// Nothing used yet.
    pub fn new() -> WeightWindow {
        WeightWindow {
            window: i64::MIN,
            used: 0,
        }
    }

    /// The weight used in the window of `now_ms` (0 in a window not seen yet).
    pub fn used_at(&self, now_ms: i64) -> u32 {
        if window_of(now_ms) == self.window {
            self.used
        } else {
            0
        }
    }

    /// Counts a request of `weight` at `now_ms`, or refuses it if it would pass `budget` (a
    /// request heavier than the whole budget never fits).
    pub fn admit(&mut self, weight: u32, budget: u32, now_ms: i64) -> Result<(), OverBudget> {
        let used = self.used_at(now_ms);
        let after = used.saturating_add(weight);
        if after > budget {
            return Err(OverBudget {
                weight,
                used,
                budget,
                retry_after: until_next_window(now_ms),
            });
        }
        self.window = window_of(now_ms);
        self.used = after;
        Ok(())
    }

    /// The count of the window last counted in, whatever the time now (for tests that must
    /// not depend on the clock minute).
    #[cfg(test)]
    pub(crate) fn last_used(&self) -> u32 {
        self.used
    }

    /// Takes the server's count, received at `now_ms`, over the local estimate. (A count
    /// received just after a minute boundary may belong to the minute before: keeping it for
    /// the new minute errs on the safe side.)
    pub fn observe(&mut self, used: u32, now_ms: i64) {
        self.window = window_of(now_ms);
        self.used = used;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weight_window_budgets_per_clock_minute() {
        let mut window = WeightWindow::new();
        let minute = 29_000_000 * WINDOW_MS;
        assert_eq!(window.admit(40, 50, minute + 1_000), Ok(()));
        assert_eq!(window.used_at(minute + 1_000), 40);
        let refused = window.admit(25, 50, minute + 45_000);
        assert_eq!(
            refused,
            Err(OverBudget {
                weight: 25,
                used: 40,
                budget: 50,
                retry_after: Duration::from_secs(15),
            })
        );
        assert_eq!(window.admit(10, 50, minute + 45_000), Ok(()));
        // The server's count replaces the estimate.
        window.observe(7, minute + 46_000);
        assert_eq!(window.used_at(minute + 46_000), 7);
        assert_eq!(window.admit(25, 50, minute + 47_000), Ok(()));
        // A new minute starts from 0.
        assert_eq!(window.used_at(minute + WINDOW_MS), 0);
        assert_eq!(window.admit(50, 50, minute + WINDOW_MS), Ok(()));
        assert!(window.admit(1, 50, minute + WINDOW_MS + 1).is_err());
        // Heavier than the whole budget: never.
        assert!(WeightWindow::new().admit(51, 50, minute).is_err());
    }

    #[test]
    fn a_429_waits_for_retry_after_or_the_next_minute() {
        let now = 29_000_000 * WINDOW_MS + 45_500;
        assert_eq!(
            hold_after(429, Some(Duration::from_secs(7)), now),
            Some(HoldRule {
                retry_after: Duration::from_secs(7),
                banned: false
            })
        );
        assert_eq!(
            hold_after(429, None, now),
            Some(HoldRule {
                retry_after: Duration::from_millis(14_500),
                banned: false
            })
        );
    }

    #[test]
    fn a_418_is_a_ban_of_retry_after_or_the_shortest_ban() {
        let now = 29_000_000 * WINDOW_MS;
        assert_eq!(
            hold_after(418, Some(Duration::from_secs(600)), now),
            Some(HoldRule {
                retry_after: Duration::from_secs(600),
                banned: true
            })
        );
        assert_eq!(
            hold_after(418, None, now),
            Some(HoldRule {
                retry_after: Duration::from_secs(120),
                banned: true
            })
        );
        for status in [200, 400, 403, 500, 503] {
            assert_eq!(hold_after(status, None, now), None, "{status}");
        }
    }

    #[test]
    fn headers_parse_or_are_ignored() {
        assert_eq!(
            parse_retry_after(Some(" 17")),
            Some(Duration::from_secs(17))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
        assert_eq!(parse_used_weight(Some("6011")), Some(6011));
        assert_eq!(parse_used_weight(Some("-1")), None);
        assert_eq!(parse_used_weight(None), None);
    }
}
