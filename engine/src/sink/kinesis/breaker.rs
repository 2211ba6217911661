//! A circuit breaker for the Kinesis endpoint: after `threshold` failed requests in a row it
//! opens and no request is sent for `open_for`; then one probe request may go (half-open); its
//! success closes the breaker, its failure opens it again. Records keep queueing meanwhile
//! (and reach the dead-letter file if their delivery deadline passes). Pure: time passed in.

use std::time::{Duration, Instant};

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests flow; failures in a row so far.
    Closed(u32),
    /// No request until the instant.
    Open(Instant),
    /// One probe request is allowed (or in flight).
    HalfOpen {
        /// The probe has been sent.
        probing: bool,
    },
}

/// The breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    state: State,
    threshold: u32,
    open_for: Duration,
    opened: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            state: State::Closed(0),
            threshold: threshold.max(1),
            open_for,
            opened: 0,
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Times it opened.
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// Whether a request may be sent now; in half-open state this claims the single probe.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed(_) => true,
            State::Open(until) if now >= until => {
                self.state = State::HalfOpen { probing: true };
                true
            }
            State::Open(_) => false,
            State::HalfOpen { probing } => {
                if probing {
                    false
                } else {
                    self.state = State::HalfOpen { probing: true };
                    true
                }
            }
        }
    }

    /// When the breaker will let a request through again, if it is open.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            State::Open(until) => Some(until),
            _ => None,
        }
    }

    /// Gives back a probe claimed by [`Breaker::allow`] but not sent.
    pub fn release(&mut self) {
        if self.state == (State::HalfOpen { probing: true }) {
            self.state = State::HalfOpen { probing: false };
        }
    }

    /// A request succeeded.
    pub fn success(&mut self) {
        self.state = State::Closed(0);
    }

    /// A request failed as a whole (throttled, 5xx, unreachable).
    pub fn failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed(n) if n + 1 < self.threshold => State::Closed(n + 1),
            State::Open(until) => State::Open(until),
            _ => {
                self.opened += 1;
                State::Open(now + self.open_for)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_and_closes() {
        let t0 = Instant::now();
        let open_for = Duration::from_secs(5);
        let mut b = Breaker::new(3, open_for);
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        assert_eq!(b.state(), State::Closed(2));
        b.success();
        assert_eq!(b.state(), State::Closed(0), "a success resets the count");
        for _ in 0..3 {
            b.failure(t0);
        }
        assert_eq!(b.state(), State::Open(t0 + open_for));
        assert_eq!(b.opened(), 1);
        assert!(!b.allow(t0 + Duration::from_secs(1)));
        assert!(b.allow(t0 + open_for), "one probe");
        assert!(!b.allow(t0 + open_for), "only one");
        b.failure(t0 + open_for);
        assert_eq!(
            b.state(),
            State::Open(t0 + open_for * 2),
            "a failed probe reopens"
        );
        assert_eq!(b.opened(), 2);
        assert!(b.allow(t0 + open_for * 2));
        b.success();
        assert!(b.allow(t0 + open_for * 2));
        assert_eq!(b.state(), State::Closed(0));
    }
}
