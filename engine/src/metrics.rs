//! Counters and latency histograms: what every thread bumps and what the summary, the progress
//! line and (later) the Prometheus exporter read. One home so that the feed, the sinks and the
//! control plane share the types without importing each other.
//!
//! Hot threads bump [`Counter`]s (padded atomics, one per cache-line pair); a histogram is owned
//! by the thread that records into it and turned into [`Percentiles`] when reported.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram records, nanoseconds (10 s); larger values are clamped.
pub const LATENCY_MAX_NS: u64 = 10_000_000_000;

/// A counter alone on its cache line (128 bytes: two lines, against adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn bump(&self) {
        self.add(1);
    }

    /// Sets the value (gauges).
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter with a single writer (one thread bumps it; any thread reads it), alone on its
/// cache line like [`Counter`]. Bumping is a relaxed load and a relaxed store, not a locked
/// read-modify-write: no other thread writes, so no increment is lost, and readers see each
/// value whole. Used by the reader threads for their per-frame counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct OwnedCounter(AtomicU64);

impl OwnedCounter {
    /// Adds `n`. Only the owning thread may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        let value = self.0.load(Ordering::Relaxed);
        self.0.store(value.wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds one. Only the owning thread may call this.
    #[inline]
    pub fn bump(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An [`OwnedCounter`] without the padding, for tables of counters that one thread owns whole
/// (no other thread writes near them, so sharing a cache line among them costs nothing): a
/// relaxed load and store to bump, a relaxed load to read.
#[derive(Debug, Default)]
pub struct OwnedCell(AtomicU64);

impl OwnedCell {
    /// Adds `n`. Only the owning thread may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        let value = self.0.load(Ordering::Relaxed);
        self.0.store(value.wrapping_add(n), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A new latency histogram (3 significant digits, 1 ns to [`LATENCY_MAX_NS`]).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("constant, valid histogram bounds")
}

/// Records `ns` into `histogram`, clamped to its range (never fails).
#[inline]
pub fn record_latency(histogram: &mut Histogram<u64>, ns: u64) {
    // In range by the clamp, so `saturating_record` never saturates here.
    histogram.saturating_record(ns.clamp(1, LATENCY_MAX_NS));
}

/// A latency histogram shared between the thread that records into it and the control plane
/// that reads it at scrape time. Writers record a batch under one lock (never per frame: the
/// readers publish a copy of their own histogram once a second); readers copy what they need.
#[derive(Debug)]
pub struct LiveHistogram(Mutex<Histogram<u64>>);

impl Default for LiveHistogram {
    fn default() -> Self {
        LiveHistogram(Mutex::new(latency_histogram()))
    }
}

impl LiveHistogram {
    /// Records every value of `ns` under one lock, each clamped to the range.
    pub fn record_all(&self, ns: impl IntoIterator<Item = u64>) {
        let mut h = crate::sync::lock(&self.0);
        for v in ns {
            record_latency(&mut h, v);
        }
    }

    /// Replaces the content with `source` (a thread publishing its own histogram), unless the
    /// control plane is reading it right now: then nothing is published (returns `false`; the
    /// next publish brings it up to date). A reader thread publishes, and a reader never
    /// waits for a lock another thread holds.
    pub fn publish(&self, source: &Histogram<u64>) -> bool {
        let mut h = match self.0.try_lock() {
            Ok(h) => h,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        h.reset();
        // Same bounds on both sides: `add` cannot fail.
        let _ = h.add(source);
        true
    }

    /// Runs `read` on the histogram (the lock is held meanwhile: keep it short).
    pub fn read<T>(&self, read: impl FnOnce(&Histogram<u64>) -> T) -> T {
        read(&crate::sync::lock(&self.0))
    }
}

/// Latency percentiles, nanoseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_outside_the_range_are_clamped_not_lost() {
        let mut h = latency_histogram();
        record_latency(&mut h, 0);
        record_latency(&mut h, u64::MAX);
        record_latency(&mut h, 1_000);
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 3);
        assert!(p.max >= LATENCY_MAX_NS && p.max <= LATENCY_MAX_NS + LATENCY_MAX_NS / 500);
    }

    #[test]
    fn live_histograms_record_publish_and_read() {
        let live = LiveHistogram::default();
        live.record_all([10, 20, 0]);
        assert_eq!(live.read(|h| h.len()), 3);
        let mut own = latency_histogram();
        record_latency(&mut own, 5_000);
        assert!(live.publish(&own));
        assert_eq!(live.read(|h| (h.len(), h.max())), (1, own.max()));
    }

    /// Regression: a reader thread publishing its histogram waited for the lock while the
    /// control plane held it to encode a scrape. It skips the publish instead.
    #[test]
    fn publishing_never_waits_for_a_scrape_in_progress() {
        let live = std::sync::Arc::new(LiveHistogram::default());
        let (held, is_held) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let scrape = {
            let live = live.clone();
            std::thread::spawn(move || {
                live.read(|_| {
                    let _ = held.send(());
                    // Held until told, or long enough that a waiting publish would show.
                    let _ = released.recv_timeout(std::time::Duration::from_secs(10));
                });
            })
        };
        is_held.recv().expect("the scrape holds the lock");
        let mut own = latency_histogram();
        record_latency(&mut own, 5_000);
        let started = std::time::Instant::now();
        assert!(!live.publish(&own), "skipped while the scrape reads");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let _ = release.send(());
        scrape.join().expect("the scrape ends");
        assert!(live.publish(&own), "published once the scrape is done");
        assert_eq!(live.read(|h| h.len()), 1);
    }

    #[test]
    fn counters_add_set_and_read() {
        let c = Counter::default();
        c.bump();
        c.add(4);
        assert_eq!(c.get(), 5);
        c.set(2);
        assert_eq!(c.get(), 2);
        assert_eq!(std::mem::align_of::<Counter>(), 128);
        assert_eq!(std::mem::align_of::<OwnedCounter>(), 128);
    }

    #[test]
    fn an_owned_counter_loses_no_bump_of_its_one_writer_while_others_read() {
        let c = std::sync::Arc::new(OwnedCounter::default());
        let writer = {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..100_000 {
                    c.bump();
                }
                c.add(5);
            })
        };
        let mut last = 0;
        while !writer.is_finished() {
            let now = c.get();
            assert!(now >= last, "a reader saw the counter go back");
            last = now;
        }
        writer.join().expect("the writer ends");
        assert_eq!(c.get(), 100_005);
    }
}
