//! The dual feed (`[feed] format = "dual"`), pure: SBE is the primary wire and Binance's
//! regular JSON streams the fallback, per connection slot. Both carry the same events with the
//! same ids (trade ids, depth update ids; JSON frames are transcoded into the SBE frames of the
//! same event, [`super::json`]), so the per-symbol sequence check treats them as one stream:
//! what one wire delivered the other's copy is a duplicate of, and what neither delivered is a
//! gap the sidecar repairs.
//!
//! What [`Choice`] decides, from the outcome of each connection attempt:
//!
//! - **SBE refused.** An SBE handshake answered 401, 403 or 410 (the key refused or revoked)
//!   moves the slot to JSON at once.
//! - **SBE down.** `fallback_after` SBE attempts failing in a row (no connection, any other
//!   HTTP status) move the slot to JSON. The slot's own backoff spaces the attempts, so this is
//!   a few seconds of missing data at most, repaired like any reconnect's.
//! - **Back to SBE.** On JSON, every `probe_every` the shell asks the slot for a make-before-break
//!   replacement ([`Choice::probe_due`]) and opens it as SBE: once it delivers it is switched
//!   in with the overlap and hold of any replacement (no gap, no duplicate). A failed probe
//!   leaves the slot on JSON (the slot's retry of the replacement then opens a JSON one) until
//!   the next probe.
//!
//! Time is an argument; the shell ([`super::reader`]) owns the sockets and the clock.

use std::time::Instant;

pub use crate::config::DualSettings;

/// The wire of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Binance's SBE streams (needs the API key).
    Sbe,
    /// Binance's JSON streams (no key), transcoded into SBE frames.
    Json,
}

/// How a connection attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The handshake completed.
    Opened,
    /// The server refused the key (HTTP 401, 403 or 410).
    KeyRefused,
    /// Anything else: no connection, a timeout, another HTTP status.
    Failed,
}

impl Attempt {
    /// Sorts a failed handshake by its error text (the reader's `HTTP <status>: ...`).
    pub fn of_error(error: &str) -> Attempt {
        let status = error
            .strip_prefix("HTTP ")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse::<u16>().ok());
        match status {
            Some(401 | 403 | 410) => Attempt::KeyRefused,
            _ => Attempt::Failed,
        }
    }
}

/// A change of wire the shell logs and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// The slot moved to JSON.
    ToJson,
    /// The slot is back on SBE.
    ToSbe,
}

/// One slot's choice of wire. See the module documentation.
#[derive(Debug)]
pub struct Choice {
    settings: DualSettings,
    on: Wire,
    sbe_failures: u32,
    /// On JSON: when to try SBE again.
    probe_at: Option<Instant>,
    /// A probe was asked of the slot: the next connection it opens is SBE.
    asked: bool,
    /// An SBE probe is being opened.
    probing: bool,
}

impl Choice {
    /// A slot starting on SBE.
    pub fn new(settings: DualSettings) -> Choice {
        Choice {
            settings,
            on: Wire::Sbe,
            sbe_failures: 0,
            probe_at: None,
            asked: false,
            probing: false,
        }
    }

    /// The wire the slot is on.
    pub fn on(&self) -> Wire {
        self.on
    }

    /// The wire of the connection the slot opens now: the slot's, or SBE for a probe that is
    /// due (asked of the slot, or due anyway when the slot opens a connection of its own).
    pub fn wire_for_open(&mut self, now: Instant) -> Wire {
        let due = self.asked || self.probe_at.is_some_and(|at| now >= at);
        if self.on == Wire::Json && due && !self.probing {
            self.asked = false;
            self.probing = true;
            self.probe_at = None;
            return Wire::Sbe;
        }
        self.on
    }

    /// Whether the shell should ask the slot for a replacement now, to probe SBE.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|at| now >= at)
    }

    /// The shell asked the slot for the probe's replacement: no more asking until it opened.
    pub fn ask_probe(&mut self) {
        self.asked = true;
    }

    /// When [`Choice::probe_due`] becomes true, for the shell's timer.
    pub fn deadline(&self) -> Option<Instant> {
        (self.on == Wire::Json && !self.probing && !self.asked)
            .then_some(self.probe_at)
            .flatten()
    }

    /// Takes the outcome of an attempt on `wire`; returns the switch it makes, if any.
    pub fn on_attempt(&mut self, wire: Wire, attempt: Attempt, now: Instant) -> Option<Switch> {
        if wire == Wire::Json {
            return None;
        }
        let probe = std::mem::take(&mut self.probing);
        match attempt {
            Attempt::Opened => {
                self.sbe_failures = 0;
                self.probe_at = None;
                (std::mem::replace(&mut self.on, Wire::Sbe) == Wire::Json).then_some(Switch::ToSbe)
            }
            Attempt::KeyRefused => self.fall_back(now, probe),
            Attempt::Failed => {
                self.sbe_failures = self.sbe_failures.saturating_add(1);
                if probe || self.sbe_failures >= self.settings.fallback_after {
                    self.fall_back(now, probe)
                } else {
                    None
                }
            }
        }
    }

    fn fall_back(&mut self, now: Instant, probe: bool) -> Option<Switch> {
        self.probe_at = Some(now + self.settings.probe_every);
        let was = std::mem::replace(&mut self.on, Wire::Json);
        (was == Wire::Sbe && !probe).then_some(Switch::ToJson)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn choice() -> (Choice, Instant) {
        let settings = DualSettings {
            fallback_after: 3,
            probe_every: Duration::from_secs(10),
        };
        (Choice::new(settings), Instant::now())
    }

    #[test]
    fn a_refused_key_moves_to_json_at_once() {
        let (mut c, t) = choice();
        assert_eq!(c.wire_for_open(t), Wire::Sbe);
        let switch = c.on_attempt(Wire::Sbe, Attempt::of_error("HTTP 401: bad key"), t);
        assert_eq!(switch, Some(Switch::ToJson));
        assert_eq!(c.wire_for_open(t), Wire::Json);
        assert_eq!(c.deadline(), Some(t + Duration::from_secs(10)));
    }

    #[test]
    fn sbe_down_moves_to_json_after_failures_in_a_row() {
        let (mut c, t) = choice();
        assert_eq!(c.on_attempt(Wire::Sbe, Attempt::Failed, t), None);
        assert_eq!(c.on_attempt(Wire::Sbe, Attempt::Failed, t), None);
        // One success resets the count.
        assert_eq!(c.on_attempt(Wire::Sbe, Attempt::Opened, t), None);
        assert_eq!(c.on_attempt(Wire::Sbe, Attempt::Failed, t), None);
        assert_eq!(c.on_attempt(Wire::Sbe, Attempt::Failed, t), None);
        let switch = c.on_attempt(Wire::Sbe, Attempt::of_error("HTTP 503: down"), t);
        assert_eq!(switch, Some(Switch::ToJson));
        assert_eq!(c.on(), Wire::Json);
        // JSON attempts change nothing.
        assert_eq!(c.on_attempt(Wire::Json, Attempt::Failed, t), None);
        assert_eq!(c.on(), Wire::Json);
    }

    #[test]
    fn a_due_probe_opens_sbe_and_its_success_switches_back() {
        let (mut c, t) = choice();
        c.on_attempt(Wire::Sbe, Attempt::KeyRefused, t);
        let later = t + Duration::from_secs(10);
        assert!(!c.probe_due(t));
        assert!(c.probe_due(later));
        c.ask_probe();
        assert!(!c.probe_due(later), "asked once");
        assert_eq!(c.deadline(), None);
        assert_eq!(c.wire_for_open(later), Wire::Sbe, "the probe");
        assert!(!c.probe_due(later), "one probe at a time");
        assert_eq!(c.deadline(), None);
        assert_eq!(
            c.on_attempt(Wire::Sbe, Attempt::Opened, later),
            Some(Switch::ToSbe)
        );
        assert_eq!(c.wire_for_open(later), Wire::Sbe);
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn a_failed_probe_stays_on_json_until_the_next() {
        let (mut c, t) = choice();
        c.on_attempt(Wire::Sbe, Attempt::KeyRefused, t);
        let later = t + Duration::from_secs(10);
        assert_eq!(c.wire_for_open(later), Wire::Sbe);
        assert_eq!(c.on_attempt(Wire::Sbe, Attempt::Failed, later), None);
        assert_eq!(c.on(), Wire::Json);
        assert_eq!(
            c.wire_for_open(later),
            Wire::Json,
            "the retry is a JSON one"
        );
        assert_eq!(c.deadline(), Some(later + Duration::from_secs(10)));
    }

    #[test]
    fn other_errors_are_plain_failures() {
        for e in [
            "HTTP 400: bad",
            "HTTP 503: x",
            "no connection within 10s",
            "HTTP 4010: x",
        ] {
            assert_eq!(Attempt::of_error(e), Attempt::Failed, "{e}");
        }
        for e in ["HTTP 401 Unauthorized: x", "HTTP 403: x", "HTTP 410: gone"] {
            assert_eq!(Attempt::of_error(e), Attempt::KeyRefused, "{e}");
        }
    }
}
