//! The two clocks hotpath reads: monotonic nanoseconds for latency, Unix milliseconds for
//! records that leave the process (heartbeats, dead letters, REST weight windows). Pure cores
//! never call these; they take the time as an argument.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The origin of [`monotonic_ns`]: the first time either clock function is called.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Monotonic nanoseconds since the first call in this process: the clock of every latency
/// measurement.
#[inline]
pub fn monotonic_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The [`monotonic_ns`] value of `instant` (0 for an instant before the origin; the first call
/// of either function sets the origin, to `instant` if it is this one): lets a caller that
/// already read `Instant::now()` have both clocks from one read.
#[inline]
pub fn monotonic_ns_at(instant: Instant) -> u64 {
    instant
        .saturating_duration_since(*EPOCH.get_or_init(|| instant))
        .as_nanos() as u64
}

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Microseconds since the Unix epoch (0 if the system clock is before it).
pub fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_never_goes_back_and_unix_time_is_recent() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
        let now = Instant::now();
        let c = monotonic_ns_at(now);
        assert!(c >= b && monotonic_ns() >= c);
        assert!(unix_ms() > 1_700_000_000_000, "after November 2023");
    }
}
