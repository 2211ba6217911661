//! The two clocks hotpath reads: monotonic nanoseconds for latency, Unix milliseconds for
//! records that leave the process (heartbeats, dead letters, REST weight windows). Pure cores
//! never call these; they take the time as an argument.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic nanoseconds since the first call in this process: the clock of every latency
/// measurement.
#[inline]
pub fn monotonic_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_never_goes_back_and_unix_time_is_recent() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a);
        assert!(unix_ms() > 1_700_000_000_000, "after November 2023");
    }
}
