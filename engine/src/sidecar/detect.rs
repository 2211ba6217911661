//! The sidecar's time and kline detection, the state around the pure [`super::silence`] and
//! [`super::klines`]: when to scan the readers' stream clock, which checks are due, and the
//! REST jobs they make (a silent trade stream's probe, a kline check). The sidecar thread runs
//! the jobs with its REST client ([`super::thread`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::backfill::PAGES_PER_MINUTE;
use super::klines::KlineSchedule;
use super::silence::{SilenceWatch, StreamClock};
use crate::binance::weights::Endpoint;
use crate::feed::event::StreamKline;
use crate::stream::StreamKind;
use crate::tally::TradeTally;

/// Closed stream klines waiting for their judgement at most (a huge symbol list with many
/// intervals): beyond, the oldest is dropped unjudged, and its interval's REST kline check, if
/// the kline covered one, is made after all.
const STREAM_KLINES_MAX: usize = 65_536;

/// Jobs waiting at most (a storm of silent streams or a huge symbol list waits for the next
/// scan or check rather than growing the queue).
const JOBS_MAX: usize = 4096;

/// REST weight the detection's jobs use per minute at most, sustained. The jobs share the
/// client's budget ([`crate::binance::rest::DEFAULT_WEIGHT_BUDGET`]) with the trade backfill
/// (paced at [`PAGES_PER_MINUTE`] pages) and the depth snapshots: unpaced, hundreds of
/// symbols' probes and kline checks would take the whole budget, and the backfill of real gaps
/// and the books' re-syncs would be refused.
pub const DETECT_WEIGHT_PER_MINUTE: u64 = 750;
/// Weight the jobs may take back to back before the pace applies.
pub const DETECT_WEIGHT_BURST: u64 = 150;
/// Nanoseconds of pace per unit of weight.
const NS_PER_WEIGHT: u64 = 60_000_000_000 / DETECT_WEIGHT_PER_MINUTE;

const _: () = assert!(
    PAGES_PER_MINUTE as u64 * 25 + DETECT_WEIGHT_PER_MINUTE
        < crate::binance::rest::DEFAULT_WEIGHT_BUDGET as u64 - 1000,
    "backfill and detection leave at least 1000 weight a minute to the depth snapshots"
);

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
    /// Closed stream klines, one ring per reader (JSON mode with `[klines] intervals`).
    pub stream_klines: Vec<rtrb::Consumer<StreamKline>>,
    /// How long after its close a stream kline is judged (`sidecar.kline_lateness_ms`): the
    /// sinks' trades of the interval, and the repairs of gaps in it, have arrived by then.
    pub stream_lateness: Duration,
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

impl Job {
    /// The REST weight the job costs at most (a kline check that disagrees also asks
    /// `aggTrades`).
    pub fn weight(self) -> u64 {
        let weight = match self {
            Job::Probe { .. } => Endpoint::HistoricalTrades.weight(),
            Job::Kline { .. } => Endpoint::Klines.weight() + Endpoint::AggTrades.weight(),
        };
        u64::from(weight)
    }
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
    /// Symbols removed during the run, and when (monotonic ns): no kline check (their sinks'
    /// tallies stop while the market goes on) until a frame of theirs after the removal shows
    /// them subscribed again (the sinks forget their tallies at the removal, so only intervals
    /// watched whole since are judged).
    removed: Vec<(u16, u64)>,
    /// The readers' stream clock, for the symbols subscribed again.
    clock: Option<Arc<StreamClock>>,
    /// The pace of the jobs' weight (the generic cell rate algorithm): when the next unit of
    /// weight is due at the sustained rate, monotonic ns.
    weight_due_ns: u64,
    /// The readers' rings of closed stream klines.
    stream_rings: Vec<rtrb::Consumer<StreamKline>>,
    /// Closed stream klines waiting until `stream_lateness_ms` after their close, in arrival
    /// order.
    stream_waiting: VecDeque<StreamKline>,
    /// `(symbol, interval_ms, open_ms)` of the klines in `stream_waiting`, to keep a kline
    /// received twice once without a scan of the queue.
    stream_keys: HashSet<(u16, i64, i64)>,
    stream_lateness_ms: i64,
    /// `(symbol, open_ms)` of the check interval's stream klines received: their REST kline
    /// check is skipped.
    stream_covered: HashSet<(u16, i64)>,
}

impl Detect {
    /// The detection for `setup`, starting at `now_ns` (monotonic) and `now_ms` (Unix).
    pub fn new(setup: DetectSetup, now_ns: u64, now_ms: i64) -> Detect {
        let bound_ns = u64::try_from(setup.silence.as_nanos()).unwrap_or(u64::MAX);
        let clock = setup.clock.clone();
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
            clock,
            weight_due_ns: now_ns,
            stream_rings: setup.stream_klines,
            stream_waiting: VecDeque::new(),
            stream_keys: HashSet::new(),
            stream_lateness_ms: i64::try_from(setup.stream_lateness.as_millis())
                .unwrap_or(i64::MAX),
            stream_covered: HashSet::new(),
        }
    }

    /// Takes the closed stream klines the readers sent (a kline received twice, over a
    /// replacement connection, is kept once); returns how many were new.
    pub fn take_stream_klines(&mut self) -> usize {
        let check_ms = self.kline_interval_ms();
        let mut taken = 0;
        for ring in &mut self.stream_rings {
            while let Ok(kline) = ring.pop() {
                if !self.stream_keys.insert(stream_key(&kline)) {
                    continue;
                }
                if check_ms == Some(kline.interval_ms) {
                    self.stream_covered.insert((kline.symbol, kline.open_ms));
                }
                if self.stream_waiting.len() >= STREAM_KLINES_MAX
                    && let Some(dropped) = self.stream_waiting.pop_front()
                {
                    self.stream_keys.remove(&stream_key(&dropped));
                    if check_ms == Some(dropped.interval_ms) {
                        self.stream_covered
                            .remove(&(dropped.symbol, dropped.open_ms));
                    }
                }
                self.stream_waiting.push_back(kline);
                taken += 1;
            }
        }
        taken
    }

    /// The stream klines due for their judgement at `now_ms` (closed `stream_lateness` ago),
    /// into `out`.
    pub fn due_stream_klines(&mut self, now_ms: i64, out: &mut Vec<StreamKline>) {
        let lateness = self.stream_lateness_ms;
        let keys = &mut self.stream_keys;
        self.stream_waiting.retain(|k| {
            let due = k.close_ms().saturating_add(lateness) < now_ms;
            if due {
                keys.remove(&stream_key(k));
                out.push(*k);
            }
            !due
        });
    }

    /// Whether stream klines are waiting (the sidecar keeps looking while they do).
    pub fn stream_klines_waiting(&self) -> bool {
        !self.stream_waiting.is_empty() || self.stream_rings.iter().any(|r| !r.is_empty())
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
        self.removed.retain(|&(s, _)| s != symbol);
        self.removed.push((symbol, now_ns));
        self.jobs.retain(|j| match *j {
            Job::Probe { symbol: s, .. } | Job::Kline { symbol: s, .. } => s != symbol,
        });
        self.stream_waiting.retain(|k| k.symbol != symbol);
        self.stream_keys.retain(|&(s, _, _)| s != symbol);
        self.stream_covered.retain(|&(s, _)| s != symbol);
    }

    /// The streams the last [`Detect::scan`] found silent.
    pub fn silent(&self) -> &[(u16, StreamKind)] {
        &self.silent
    }

    /// Queues the kline checks due at `now_ms` for symbols `0..symbols()`, but those a closed
    /// stream kline of the interval covers (judged without REST); returns how many were
    /// skipped so.
    pub fn schedule(&mut self, now_ms: i64, symbols: impl FnOnce() -> usize) -> usize {
        let Some(schedule) = self.schedule.as_mut() else {
            return 0;
        };
        if !schedule.is_due(now_ms) {
            return 0;
        }
        self.due.clear();
        schedule.due(now_ms, symbols(), &mut self.due);
        let interval_ms = schedule.interval_ms();
        let oldest = self
            .due
            .iter()
            .map(|&(_, open)| open)
            .min()
            .unwrap_or(now_ms);
        let covered = &mut self.stream_covered;
        let before = self.due.len();
        self.due.retain(|due| !covered.contains(due));
        let skipped = before - self.due.len();
        // What no later check can ask about.
        covered.retain(|&(_, open)| open >= oldest.saturating_sub(interval_ms));
        // A symbol subscribed again (a frame of it after its removal) is checked again.
        if let Some(clock) = &self.clock {
            self.removed.retain(|&(s, at)| clock.latest(s) <= at);
        }
        for &(symbol, open_ms) in &self.due {
            let removed = self.removed.iter().any(|&(s, _)| s == symbol);
            if self.jobs.len() < JOBS_MAX && !removed {
                self.jobs.push_back(Job::Kline { symbol, open_ms });
            }
        }
        skipped
    }

    /// The next job at `now_ns`, when the pace allows its weight
    /// ([`DETECT_WEIGHT_PER_MINUTE`]); otherwise it waits.
    pub fn next_job(&mut self, now_ns: u64) -> Option<Job> {
        let job = *self.jobs.front()?;
        let tolerance_ns = DETECT_WEIGHT_BURST.saturating_mul(NS_PER_WEIGHT);
        if self.weight_due_ns > now_ns.saturating_add(tolerance_ns) {
            return None;
        }
        self.weight_due_ns = self
            .weight_due_ns
            .max(now_ns)
            .saturating_add(job.weight().saturating_mul(NS_PER_WEIGHT));
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

/// A stream kline's identity: a kline received twice (over a replacement connection) is one.
fn stream_key(kline: &StreamKline) -> (u16, i64, i64) {
    (kline.symbol, kline.interval_ms, kline.open_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE_NS: u64 = 60_000_000_000;

    fn kline_symbols(detect: &mut Detect, now_ms: i64) -> Vec<u16> {
        detect.schedule(now_ms, || 2);
        let mut symbols = Vec::new();
        while let Some(job) = detect.jobs.pop_front() {
            if let Job::Kline { symbol, .. } = job {
                symbols.push(symbol);
            }
        }
        symbols
    }

    /// Regression: a symbol removed once was never kline-checked again, even after it was
    /// subscribed again.
    #[test]
    fn a_removed_symbol_is_checked_again_once_subscribed_again() {
        let clock = Arc::new(StreamClock::new(2));
        let setup = DetectSetup {
            clock: Some(clock.clone()),
            klines: Some((60_000, Duration::ZERO, Duration::from_millis(60_000))),
            ..DetectSetup::default()
        };
        let mut detect = Detect::new(setup, 0, 0);
        clock.stamp(0, StreamKind::Trade, 5);
        detect.forget(0, 10);
        assert_eq!(
            kline_symbols(&mut detect, 60_000),
            [1],
            "removed: not checked"
        );
        assert_eq!(kline_symbols(&mut detect, 120_000), [1], "still away");
        clock.stamp(0, StreamKind::Depth, 11);
        assert_eq!(kline_symbols(&mut detect, 180_000), [0, 1], "back");
    }

    /// Regression: a stream kline of the check interval covered its REST kline check (skipped)
    /// when it arrived, but once more than `STREAM_KLINES_MAX` klines waited it was dropped
    /// unjudged, and its interval was checked by neither.
    #[test]
    fn a_stream_kline_dropped_for_room_leaves_its_rest_check_in_place() {
        let kline = |symbol, interval_ms, open_ms| StreamKline {
            symbol,
            interval_ms,
            open_ms,
            first_id: 1,
            last_id: 1,
            trades: 1,
            volume: 1,
        };
        let (mut producer, consumer) = rtrb::RingBuffer::new(STREAM_KLINES_MAX + 1);
        let setup = DetectSetup {
            klines: Some((
                60_000,
                Duration::from_millis(10_000),
                Duration::from_millis(60_000),
            )),
            stream_klines: vec![consumer],
            stream_lateness: Duration::from_millis(10_000),
            ..DetectSetup::default()
        };
        let mut detect = Detect::new(setup, 0, 0);
        // The minute the first check asks about (open -60 s), then a flood of 1 s klines.
        assert!(producer.push(kline(0, 60_000, -60_000)).is_ok());
        for at in 0..STREAM_KLINES_MAX {
            let open_ms = i64::try_from(at).unwrap_or(0) * 1_000;
            assert!(producer.push(kline(1, 1_000, open_ms)).is_ok());
        }
        assert_eq!(detect.take_stream_klines(), STREAM_KLINES_MAX + 1);
        assert_eq!(
            kline_symbols(&mut detect, 60_000),
            [0, 1],
            "the dropped stream kline no longer covers symbol 0's REST check"
        );
    }

    /// Regression: the detection's jobs ran back to back, unpaced: with hundreds of symbols
    /// the probes and kline checks took the REST client's whole weight budget, and the
    /// backfill of real gaps and the books' re-syncs were refused. Their weight is paced now.
    #[test]
    fn jobs_are_paced_by_their_weight() {
        let setup = DetectSetup {
            klines: Some((60_000, Duration::ZERO, Duration::from_millis(1))),
            ..DetectSetup::default()
        };
        let start_ns = 1_000 * MINUTE_NS;
        let mut detect = Detect::new(setup, start_ns, 0);
        detect.schedule(3_600_000, || 1_000);
        assert_eq!(detect.pending(), 1_000, "a kline check per symbol");
        let mut weight = 0;
        while let Some(job) = detect.next_job(start_ns) {
            weight += job.weight();
        }
        assert!(
            weight > 0 && weight <= DETECT_WEIGHT_BURST + 6,
            "a burst at once: {weight}"
        );
        // A minute on, polled as the sidecar does (every few milliseconds).
        let mut now = start_ns;
        while now < start_ns + MINUTE_NS {
            now += 2_000_000;
            while let Some(job) = detect.next_job(now) {
                weight += job.weight();
            }
        }
        assert!(
            weight <= DETECT_WEIGHT_PER_MINUTE + DETECT_WEIGHT_BURST + 6,
            "{weight} in a minute"
        );
        assert!(
            weight >= DETECT_WEIGHT_PER_MINUTE,
            "the pace, not a stall: {weight}"
        );
        assert!(detect.pending() > 0, "the rest waits");
    }
}
