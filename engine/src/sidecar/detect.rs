//! The sidecar's time and kline detection, the state around the pure [`super::silence`] and
//! [`super::klines`]: when to scan the readers' stream clock, which checks are due, and the
//! REST jobs they make (a silent trade stream's probe, a kline check). The sidecar thread runs
//! the jobs with its REST client ([`super::thread`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::klines::KlineSchedule;
use super::silence::{SilenceWatch, StreamClock};
use crate::stream::StreamKind;
use crate::tally::TradeTally;

/// Jobs waiting at most (a storm of silent streams or a huge symbol list waits for the next
/// scan or check rather than growing the queue).
const JOBS_MAX: usize = 4096;

/// What the detection needs (the default: nothing detected beyond the sequence check).
#[derive(Default)]
pub struct DetectSetup {
    /// The readers' stream clock; `None`: silence is not watched.
    pub clock: Option<Arc<StreamClock>>,
    /// `sidecar.stream_silence_ms`.
    pub silence: Duration,
    /// The connection carrying each configured symbol.
    pub connections: Vec<u32>,
    /// Each consumer's tally, in consumer order.
    pub tallies: Vec<Arc<TradeTally>>,
    /// The kline check: (interval ms, lateness, every); `None`: no check.
    pub klines: Option<(i64, Duration, Duration)>,
}

/// A REST job of the detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Trades of `symbol` from `from` on may have been missed: fetch them.
    Probe {
        /// Symbol index.
        symbol: u16,
        /// The first id not delivered to every sink.
        from: i64,
    },
    /// Compare `symbol`'s kline opening at `open_ms` with what the sinks delivered.
    Kline {
        /// Symbol index.
        symbol: u16,
        /// The interval's open time, Unix ms.
        open_ms: i64,
    },
}

/// The detection's state.
pub struct Detect {
    watch: Option<(SilenceWatch, Arc<StreamClock>)>,
    scan_every_ns: u64,
    next_scan_ns: u64,
    stamps: Vec<u64>,
    silent: Vec<(u16, StreamKind)>,
    schedule: Option<KlineSchedule>,
    due: Vec<(u16, i64)>,
    /// Each consumer's tally.
    pub tallies: Vec<Arc<TradeTally>>,
    jobs: VecDeque<Job>,
    /// Symbols removed during the run: no kline check (their sinks' tallies stop while the
    /// market goes on).
    removed: Vec<u16>,
}

impl Detect {
    /// The detection for `setup`, starting at `now_ns` (monotonic) and `now_ms` (Unix).
    pub fn new(setup: DetectSetup, now_ns: u64, now_ms: i64) -> Detect {
        let bound_ns = u64::try_from(setup.silence.as_nanos()).unwrap_or(u64::MAX);
        let watch = setup
            .clock
            .filter(|_| bound_ns > 0)
            .map(|clock| (SilenceWatch::new(bound_ns, setup.connections), clock));
        let schedule = setup.klines.map(|(interval_ms, lateness, every)| {
            let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            KlineSchedule::new(interval_ms, ms(lateness), ms(every), now_ms)
        });
        // A quarter of the bound, between 10 ms and 1 s: detection within 1.25 bounds.
        let scan_every_ns = (bound_ns / 4).clamp(10_000_000, 1_000_000_000);
        Detect {
            watch,
            scan_every_ns,
            next_scan_ns: now_ns.saturating_add(scan_every_ns),
            stamps: Vec::new(),
            silent: Vec::new(),
            schedule,
            due: Vec::new(),
            tallies: setup.tallies,
            jobs: VecDeque::new(),
            removed: Vec::new(),
        }
    }

    /// The kline interval, ms, when the check runs.
    pub fn kline_interval_ms(&self) -> Option<i64> {
        self.schedule.as_ref().map(KlineSchedule::interval_ms)
    }

    /// Scans for silent streams when due; returns them (trades: also queued as probes from the
    /// lowest last id any sink delivered; the caller re-syncs depth books).
    pub fn scan(&mut self, now_ns: u64) -> &[(u16, StreamKind)] {
        self.silent.clear();
        let Some((watch, clock)) = self.watch.as_mut() else {
            return &self.silent;
        };
        if now_ns < self.next_scan_ns {
            return &self.silent;
        }
        self.next_scan_ns = now_ns.saturating_add(self.scan_every_ns);
        clock.read(&mut self.stamps);
        watch.scan(&self.stamps, now_ns, &mut self.silent);
        for i in 0..self.silent.len() {
            let (symbol, kind) = self.silent[i];
            if kind != StreamKind::Trade {
                continue;
            }
            let last = self.tallies.iter().filter_map(|t| t.last_id(symbol)).min();
            if let Some(last) = last
                && self.jobs.len() < JOBS_MAX
            {
                let from = last.saturating_add(1);
                self.jobs.push_back(Job::Probe { symbol, from });
            }
        }
        &self.silent
    }

    /// `symbol` was unsubscribed at `now_ns`: its streams are not silent (until it is subscribed
    /// again), and its kline intervals are not checked any more.
    pub fn forget(&mut self, symbol: u16, now_ns: u64) {
        if let Some((watch, _)) = self.watch.as_mut() {
            watch.forget(symbol, now_ns);
        }
        if !self.removed.contains(&symbol) {
            self.removed.push(symbol);
        }
        self.jobs.retain(|j| match *j {
            Job::Probe { symbol: s, .. } | Job::Kline { symbol: s, .. } => s != symbol,
        });
    }

    /// The streams the last [`Detect::scan`] found silent.
    pub fn silent(&self) -> &[(u16, StreamKind)] {
        &self.silent
    }

    /// Queues the kline checks due at `now_ms` for symbols `0..symbols()`.
    pub fn schedule(&mut self, now_ms: i64, symbols: impl FnOnce() -> usize) {
        let Some(schedule) = self.schedule.as_mut() else {
            return;
        };
        if !schedule.is_due(now_ms) {
            return;
        }
        self.due.clear();
        schedule.due(now_ms, symbols(), &mut self.due);
        for &(symbol, open_ms) in &self.due {
            if self.jobs.len() < JOBS_MAX && !self.removed.contains(&symbol) {
                self.jobs.push_back(Job::Kline { symbol, open_ms });
            }
        }
    }

    /// The next job.
    pub fn next_job(&mut self) -> Option<Job> {
        self.jobs.pop_front()
    }

    /// Jobs waiting.
    pub fn pending(&self) -> usize {
        self.jobs.len()
    }

    /// At stop: jobs not started are dropped.
    pub fn clear(&mut self) {
        self.jobs.clear();
    }
}
