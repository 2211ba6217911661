//! Idle strategies and wake-on-data: what a ring consumer (the sinks, the sidecar, the counting
//! consumer) does when a round of its duty cycle found nothing to do, and how a producer wakes
//! it when its ring gets data.
//!
//! A strategy is chosen per thread in the configuration, in the manner of Agrona's
//! `IdleStrategy`: `busy_spin` never sleeps (a dedicated core, lowest latency, 100% of it),
//! `backoff` (the default) spins, then yields, then parks with a timeout that doubles from
//! [`IDLE_PARK_MIN`] to [`IDLE_PARK_MAX`], and `blocking` parks at once for
//! [`IDLE_BLOCKING_PARK`]. [`Idler`] is the pure part: it turns "this round did `work` items"
//! into a [`Step`].
//!
//! `backoff` adapts to the rate. An idle spell (the idle rounds between two rounds with work)
//! whose spins and yields found nothing, the work coming only after a park, is a miss; after
//! [`IDLE_SPIN_MISSES_MAX`] misses in a row the spells park at once, except every
//! [`IDLE_SPIN_PROBE_EVERY`]-th, which spins again, and a spell whose spins find work brings
//! the spinning back. At low rates (a frame a millisecond) the spin phase never caught the
//! next frame and only cost CPU (about 100 rounds of the consumer's duty cycle and 10 yields,
//! each a system call on a tokio runtime); at high rates it still catches frames without a
//! wake-up. A consumer that knows when its own timers are next due ([`Idler::step_until`],
//! the Redis writer) parks until then (capped at [`IDLE_PARK_MAX`]) instead of doubling from
//! [`IDLE_PARK_MIN`]: every other input rings its bell, and on a KVM guest each timer wake-up
//! costs tens of microseconds.
//!
//! A parked consumer is woken by its [`Bell`]: before parking it announces itself (`parked`
//! flag), issues a `SeqCst` fence and looks at its rings once more; a producer, after pushing a
//! batch, issues a `SeqCst` fence and reads the flag, and rings only when it is set. The two
//! fences make this a Dekker handshake: either the consumer's recheck sees the push, or the
//! producer sees the flag, so no wake-up is lost, and while the consumer runs the producer pays
//! one fence and one load per batch, never a system call. Thread consumers park on a
//! crossbeam-utils `Parker`; consumers that are tokio tasks wait on a `tokio::sync::Notify`
//! (both keep a wake-up that arrives before the wait, so ringing early only costs one spurious
//! round). The timeout stays as a safety net and drives the consumer's timers; data never waits
//! for it.
//!
//! Awaiting replies ([`Idler::step_awaiting`], the Redis writer): while every request slot is
//! busy (one pipeline in flight per connection), frames that come cannot be sent before a reply
//! anyway, so the consumer waits for the reply alone ([`Step::Await`]): it does not announce
//! itself parked, the producers do not ring (a fence and a load per batch, no system call), and
//! the reply's task wakes it ([`Bell::wake`]) the moment it lands. The frames of the whole round
//! trip go out in the next request: batches grow with the load by themselves (group commit),
//! with no timer in the way of the latency.
//!
//! Lingering ([`Idler::with_linger`], the Redis writer's `redis.linger_us`, off by default):
//! frames taken while nothing is in flight wait until the oldest of them is that old before
//! they are sent, so at rates where frames come one by one a request still carries several. It
//! trades latency for CPU and is a choice of the deployment; an idle consumer never lingers.
//!
//! Architecture invariant: [`Bell::ring`] never blocks and never allocates (a fence, a load,
//! and while the consumer is parked one swap and one unpark or notify).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use crossbeam_utils::sync::{Parker, Unparker};
use tokio::sync::Notify;

use crate::constants::{
    IDLE_BLOCKING_PARK, IDLE_PARK_MAX, IDLE_PARK_MIN, IDLE_SPIN_MISSES_MAX, IDLE_SPIN_PROBE_EVERY,
    IDLE_SPINS_MAX, IDLE_YIELDS_MAX,
};

/// What a consumer thread does when a round found nothing to do (config value `idle`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Never sleep: spin (threads) or yield to the runtime (tasks). For a dedicated core.
    BusySpin,
    /// Spin, then yield, then park with a growing timeout; woken by data. The default.
    #[default]
    Backoff,
    /// Park at once until woken by data (or [`IDLE_BLOCKING_PARK`] passes).
    Blocking,
}

impl IdleStrategy {
    /// The accepted configuration values.
    pub const NAMES: [&'static str; 3] = ["busy_spin", "backoff", "blocking"];

    /// The strategy named `name` (a configuration value).
    pub fn parse(name: &str) -> Option<IdleStrategy> {
        match name {
            "busy_spin" => Some(IdleStrategy::BusySpin),
            "backoff" => Some(IdleStrategy::Backoff),
            "blocking" => Some(IdleStrategy::Blocking),
            _ => None,
        }
    }

    /// The configuration value naming this strategy.
    pub fn name(self) -> &'static str {
        match self {
            IdleStrategy::BusySpin => "busy_spin",
            IdleStrategy::Backoff => "backoff",
            IdleStrategy::Blocking => "blocking",
        }
    }
}

/// What to do after an idle round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A CPU spin hint (a task yields to its runtime instead, so its other tasks run).
    Spin,
    /// Give the core to another thread (a task: to another task).
    Yield,
    /// Announce, recheck, and park until woken or this long passes.
    Park(Duration),
    /// Sleep this long without announcing (producers do not ring), then run a round: the
    /// frames that came meanwhile are taken by one wake-up. Only while nothing is in flight
    /// (a thread sleep holds the runtime's other tasks too).
    Linger(Duration),
    /// Wait for a reply: until [`Bell::wake`] (the request's task finished) or this long
    /// passes, without announcing (producers do not ring). The runtime's tasks run meanwhile.
    Await(Duration),
}

/// The pure part of a strategy: counts idle rounds and says what the next one does.
#[derive(Clone, Debug)]
pub struct Idler {
    strategy: IdleStrategy,
    /// Idle rounds in a row (saturating).
    rounds: u32,
    /// The next park's timeout; within `IDLE_PARK_MIN..=IDLE_PARK_MAX`.
    park: Duration,
    /// Idle spells in a row whose spins and yields found nothing (past
    /// [`IDLE_SPIN_MISSES_MAX`], cycling through the probe period: [`one_more_miss`]); from
    /// [`IDLE_SPIN_MISSES_MAX`] on, spells park at once but every [`IDLE_SPIN_PROBE_EVERY`]-th.
    misses: u32,
    /// This spell parks at once (decided at its first idle round).
    cold: bool,
    /// How long frames taken while nothing is in flight wait before they are sent; zero: no
    /// linger (the consumer applies it, [`Step::Linger`]).
    linger: Duration,
}

impl Idler {
    /// An idler following `strategy`.
    pub fn new(strategy: IdleStrategy) -> Idler {
        Idler {
            strategy,
            rounds: 0,
            park: IDLE_PARK_MIN,
            misses: 0,
            cold: false,
            linger: Duration::ZERO,
        }
    }

    /// Sets the linger ([`Idler::linger`]); zero: none. `busy_spin` never lingers (a dedicated
    /// core wants every frame at once).
    pub fn with_linger(mut self, linger: Duration) -> Idler {
        if self.strategy != IdleStrategy::BusySpin {
            self.linger = linger;
        }
        self
    }

    /// The strategy followed.
    pub fn strategy(&self) -> IdleStrategy {
        self.strategy
    }

    /// After a round that did `work` items: `None` to start the next round at once, or how to
    /// idle first. Work resets the backoff. A `backoff` spell spins, yields, then parks with a
    /// timeout doubling from [`IDLE_PARK_MIN`]; after [`IDLE_SPIN_MISSES_MAX`] spells in a row
    /// whose spins and yields found nothing, spells park at once (but every
    /// [`IDLE_SPIN_PROBE_EVERY`]-th, which spins again to notice a higher rate).
    #[inline]
    pub fn step(&mut self, work: usize) -> Option<Step> {
        self.step_until(work, None)
    }

    /// [`Idler::step`] for a consumer that knows when its own timers are next due (`until`,
    /// from now): a `backoff` park waits that long (at least [`IDLE_PARK_MIN`], at most
    /// [`IDLE_PARK_MAX`]) instead of doubling from [`IDLE_PARK_MIN`], since everything else
    /// that gives it work rings its bell. `None`: the doubling.
    #[inline]
    pub fn step_until(&mut self, work: usize, until: Option<Duration>) -> Option<Step> {
        if work > 0 {
            self.end_spell();
            return None;
        }
        self.rounds = self.rounds.saturating_add(1);
        Some(match self.strategy {
            IdleStrategy::BusySpin => Step::Spin,
            IdleStrategy::Blocking => Step::Park(IDLE_BLOCKING_PARK),
            IdleStrategy::Backoff => self.backoff(until),
        })
    }

    fn backoff(&mut self, until: Option<Duration>) -> Step {
        if self.rounds == 1 {
            self.cold = self.misses >= IDLE_SPIN_MISSES_MAX
                && !self.misses.is_multiple_of(IDLE_SPIN_PROBE_EVERY);
        }
        if !self.cold && self.rounds <= IDLE_SPINS_MAX {
            return Step::Spin;
        }
        if !self.cold && self.rounds <= IDLE_SPINS_MAX + IDLE_YIELDS_MAX {
            return Step::Yield;
        }
        if let Some(until) = until {
            return Step::Park(until.clamp(IDLE_PARK_MIN, IDLE_PARK_MAX));
        }
        let park = self.park;
        self.park = (park * 2).min(IDLE_PARK_MAX);
        Step::Park(park)
    }

    /// Work came: the idle spell (if any) ends, a hit when its spins or yields found the work,
    /// a miss when it had to park.
    fn end_spell(&mut self) {
        if self.rounds > 0 && self.strategy == IdleStrategy::Backoff {
            let parked = self.cold || self.rounds > IDLE_SPINS_MAX + IDLE_YIELDS_MAX;
            self.misses = if parked {
                one_more_miss(self.misses)
            } else {
                0
            };
        }
        self.rounds = 0;
        self.park = IDLE_PARK_MIN;
    }
}

/// The count of missed spells in a row after one more: it counts up while it decides
/// anything, then cycles through the probe period (keeping its place in it), so that a
/// consumer that misses for ever (a low rate for months) still probes every
/// [`IDLE_SPIN_PROBE_EVERY`]-th spell. A count stuck at its maximum would never probe again.
fn one_more_miss(misses: u32) -> u32 {
    let next = misses.saturating_add(1);
    if next >= IDLE_SPIN_MISSES_MAX + IDLE_SPIN_PROBE_EVERY {
        next - IDLE_SPIN_PROBE_EVERY
    } else {
        next
    }
}

impl Idler {
    /// This idler's linger ([`Idler::with_linger`]); zero: none.
    pub fn linger(&self) -> Duration {
        self.linger
    }

    /// After a round that did `work` items, `awaiting` saying whether the consumer can only
    /// wait for a reply (every request slot busy). Work runs the next round at once; no work
    /// while awaiting waits for the reply ([`Step::Await`], `timeout` bounding it for the
    /// consumer's timers), not for the producers; otherwise the strategy's step (spin, yield,
    /// park until `until` as in [`Idler::step_until`], woken by the producers' bell).
    /// `busy_spin` never waits.
    #[inline]
    pub fn step_awaiting(
        &mut self,
        work: usize,
        awaiting: bool,
        timeout: Duration,
        until: Option<Duration>,
    ) -> Option<Step> {
        if !awaiting || self.strategy == IdleStrategy::BusySpin {
            return self.step_until(work, until);
        }
        self.rounds = 0;
        self.park = IDLE_PARK_MIN;
        (work == 0).then_some(Step::Await(timeout))
    }
}

/// How a parked consumer is woken.
enum Wake {
    /// Nobody parks on this bell (tests that poll the rings themselves).
    Nobody,
    /// An OS thread parked on the `Parker` of this `Unparker`.
    Thread(Unparker),
    /// A tokio task waiting on this `Notify`.
    Task(Notify),
}

struct BellInner {
    /// Set by the consumer just before it parks, cleared when it runs again (or by the
    /// producer that wakes it, so that several producers wake it once).
    parked: CachePadded<AtomicBool>,
    wake: Wake,
}

/// A consumer's doorbell, shared by every producer of its rings (cloning shares it).
#[derive(Clone)]
pub struct Bell(Arc<BellInner>);

impl Bell {
    fn with(wake: Wake) -> Bell {
        Bell(Arc::new(BellInner {
            parked: CachePadded::new(AtomicBool::new(false)),
            wake,
        }))
    }

    /// A bell nobody parks on: ringing it costs a fence and a load.
    pub fn silent() -> Bell {
        Bell::with(Wake::Nobody)
    }

    /// A bell for a consumer that is a tokio task (its [`TaskIdle`]).
    pub fn task() -> Bell {
        Bell::with(Wake::Task(Notify::new()))
    }

    /// A bell for a consumer that is an OS thread, and the parker that thread waits on (its
    /// [`ThreadIdle`]).
    pub fn thread() -> (Bell, Parker) {
        let parker = Parker::new();
        (Bell::with(Wake::Thread(parker.unparker().clone())), parker)
    }

    /// The producer's side, once per batch pushed: wakes the consumer if it announced it is
    /// parked. Never blocks or allocates.
    #[inline]
    pub fn ring(&self) {
        // Pairs with the consumer's fence between its `parked` store and its ring recheck.
        fence(Ordering::SeqCst);
        self.ring_fenced();
    }

    /// [`Bell::ring`] for a caller that has just issued the `SeqCst` fence itself (one fence
    /// for several bells).
    #[inline]
    pub fn ring_fenced(&self) {
        let parked = &self.0.parked;
        if parked.load(Ordering::Relaxed) && parked.swap(false, Ordering::Relaxed) {
            self.wake();
        }
    }

    /// Wakes the consumer whether or not it is parked (a stop flag set, a task finished): a
    /// consumer not parked takes one spurious round later. Cold.
    pub fn wake(&self) {
        match &self.0.wake {
            Wake::Nobody => {}
            Wake::Thread(unparker) => unparker.unpark(),
            Wake::Task(notify) => notify.notify_one(),
        }
    }

    /// Announces the consumer parked; `SeqCst` fence, so the recheck that follows sees any push
    /// whose producer did not see the flag.
    fn announce(&self) {
        self.0.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    fn clear(&self) {
        self.0.parked.store(false, Ordering::Relaxed);
    }
}

/// The idle side of a consumer that is an OS thread.
pub struct ThreadIdle {
    idler: Idler,
    bell: Bell,
    parker: Parker,
}

impl ThreadIdle {
    /// Idles per `strategy`, parking on `parker` (from [`Bell::thread`], with `bell`).
    pub fn new(strategy: IdleStrategy, bell: Bell, parker: Parker) -> ThreadIdle {
        ThreadIdle {
            idler: Idler::new(strategy),
            bell,
            parker,
        }
    }

    /// After a round that did `work` items: idles as the strategy says. `has_work` rechecks
    /// the rings (and stop flag) after the consumer announced it parks.
    #[inline]
    pub fn idle(&mut self, work: usize, has_work: impl FnOnce() -> bool) {
        match self.idler.step(work) {
            None => {}
            Some(Step::Spin) => std::hint::spin_loop(),
            Some(Step::Yield) => std::thread::yield_now(),
            Some(Step::Park(timeout)) => self.park(timeout, has_work),
            Some(Step::Linger(linger)) => std::thread::sleep(linger),
            Some(Step::Await(timeout)) => self.parker.park_timeout(timeout),
        }
    }

    /// Parks until the bell rings or `timeout` passes, unless `has_work` (asked after the
    /// announcement) says there is something to do.
    pub fn park(&self, timeout: Duration, has_work: impl FnOnce() -> bool) {
        self.bell.announce();
        if !has_work() {
            self.parker.park_timeout(timeout);
        }
        self.bell.clear();
    }
}

/// Clears the `parked` flag when a task's wait ends or is dropped (a `select!` that took
/// another branch).
struct Announced<'a>(&'a Bell);

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// The idle side of a consumer that is a tokio task on its own current-thread runtime.
pub struct TaskIdle {
    idler: Idler,
    bell: Bell,
}

impl TaskIdle {
    /// Idles per `strategy`, woken through `bell` (from [`Bell::task`]; another kind of bell
    /// leaves only the timeout to wake it).
    pub fn new(strategy: IdleStrategy, bell: Bell) -> TaskIdle {
        TaskIdle {
            idler: Idler::new(strategy),
            bell,
        }
    }

    /// This consumer's bell.
    pub fn bell(&self) -> &Bell {
        &self.bell
    }

    /// After a round that did `work` items: what to do, for [`TaskIdle::wait`].
    #[inline]
    pub fn step(&mut self, work: usize) -> Option<Step> {
        self.idler.step(work)
    }

    /// Lingers `linger` after rounds with work ([`Idler::with_linger`]).
    pub fn with_linger(mut self, linger: Duration) -> TaskIdle {
        self.idler = self.idler.with_linger(linger);
        self
    }

    /// [`Idler::step_awaiting`]: after a round that did `work` items, `awaiting` a reply with
    /// every request slot busy; an idle park lasts until `until` when given.
    #[inline]
    pub fn step_awaiting(
        &mut self,
        work: usize,
        awaiting: bool,
        timeout: Duration,
        until: Option<Duration>,
    ) -> Option<Step> {
        self.idler.step_awaiting(work, awaiting, timeout, until)
    }

    /// The linger ([`Idler::with_linger`]); zero: none.
    pub fn linger(&self) -> Duration {
        self.idler.linger()
    }

    /// Carries out `step`. A spin of `backoff` stays a CPU hint; `busy_spin` yields to the
    /// runtime each round so the task's spawned work (requests in flight) runs. A park waits
    /// for the bell or the timeout, unless `has_work` (asked after the announcement) says there
    /// is something to do. A linger sleeps the thread (one `nanosleep`, precise to tens of
    /// microseconds where tokio's timer rounds to milliseconds): the task owns its runtime,
    /// whose other tasks (its requests) wait with it, their replies read in the yield after
    /// it. An await waits for [`Bell::wake`] or its timeout without announcing (the producers
    /// do not ring), the runtime's tasks running meanwhile. Safe to drop mid-way (in a
    /// `select!`).
    pub fn wait(
        &self,
        step: Step,
        has_work: impl FnOnce() -> bool,
    ) -> impl Future<Output = ()> + '_ {
        let busy = self.idler.strategy() == IdleStrategy::BusySpin;
        let announced = match step {
            Step::Park(_) => {
                self.bell.announce();
                let guard = Announced(&self.bell);
                (!has_work()).then_some(guard)
            }
            _ => None,
        };
        async move {
            match step {
                Step::Spin if !busy => std::hint::spin_loop(),
                Step::Spin | Step::Yield => tokio::task::yield_now().await,
                Step::Linger(linger) => {
                    std::thread::sleep(linger);
                    tokio::task::yield_now().await;
                }
                Step::Await(timeout) => self.park(timeout).await,
                Step::Park(timeout) => {
                    if let Some(guard) = announced {
                        self.park(timeout).await;
                        drop(guard);
                    }
                }
            }
        }
    }

    async fn park(&self, timeout: Duration) {
        match &self.bell.0.wake {
            Wake::Task(notify) => {
                let _ = tokio::time::timeout(timeout, notify.notified()).await;
            }
            Wake::Nobody | Wake::Thread(_) => tokio::time::sleep(timeout).await,
        }
    }

    /// [`TaskIdle::step`] then [`TaskIdle::wait`].
    pub async fn idle(&mut self, work: usize, has_work: impl FnOnce() -> bool) {
        if let Some(step) = self.step(work) {
            self.wait(step, has_work).await;
        }
    }
}

/// Spawns `work` on the current runtime and rings `bell` when it finishes, so that a consumer
/// parked while it ran looks at the result at once.
pub fn spawn_ringing<F>(bell: &Bell, work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let bell = bell.clone();
    tokio::spawn(async move {
        let output = work.await;
        bell.wake();
        output
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for name in IdleStrategy::NAMES {
            let strategy = IdleStrategy::parse(name).expect("a listed name parses");
            assert_eq!(strategy.name(), name);
        }
        assert_eq!(IdleStrategy::parse("spin"), None);
        assert_eq!(IdleStrategy::parse("Backoff"), None);
        assert_eq!(IdleStrategy::default(), IdleStrategy::Backoff);
    }

    #[test]
    fn backoff_spins_then_yields_then_parks_longer_up_to_the_maximum() {
        let mut idler = Idler::new(IdleStrategy::Backoff);
        let steps: Vec<Step> = (0..400).filter_map(|_| idler.step(0)).collect();
        let spins = IDLE_SPINS_MAX as usize;
        let yields = IDLE_YIELDS_MAX as usize;
        assert!(steps[..spins].iter().all(|s| *s == Step::Spin));
        assert!(
            steps[spins..spins + yields]
                .iter()
                .all(|s| *s == Step::Yield)
        );
        let parks: Vec<Duration> = steps[spins + yields..]
            .iter()
            .map(|s| match s {
                Step::Park(d) => *d,
                other => panic!("expected a park, got {other:?}"),
            })
            .collect();
        assert_eq!(parks[0], IDLE_PARK_MIN);
        assert_eq!(parks[1], IDLE_PARK_MIN * 2);
        assert!(parks.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*parks.last().expect("parks"), IDLE_PARK_MAX);
    }

    #[test]
    fn work_resets_the_backoff() {
        let mut idler = Idler::new(IdleStrategy::Backoff);
        for _ in 0..1000 {
            idler.step(0);
        }
        assert!(matches!(idler.step(0), Some(Step::Park(d)) if d == IDLE_PARK_MAX));
        assert_eq!(idler.step(3), None);
        assert_eq!(idler.step(0), Some(Step::Spin));
    }

    /// Idles `idler` until it parks; returns the idle rounds before the park.
    fn rounds_to_park(idler: &mut Idler) -> u32 {
        let mut rounds = 0;
        while !matches!(idler.step(0), Some(Step::Park(_))) {
            rounds += 1;
            assert!(rounds < 10_000, "a backoff spell parks");
        }
        rounds
    }

    /// At low rates the work comes only after a park: after a few such spells the spins and
    /// yields are skipped, but a probe spell spins again now and then, and one whose spins
    /// find work brings the spinning back.
    #[test]
    fn spells_whose_spins_find_nothing_park_at_once_until_a_probe_finds_work() {
        let spin_phase = IDLE_SPINS_MAX + IDLE_YIELDS_MAX;
        let mut idler = Idler::new(IdleStrategy::Backoff);
        for _ in 0..IDLE_SPIN_MISSES_MAX {
            assert_eq!(rounds_to_park(&mut idler), spin_phase);
            assert_eq!(idler.step(1), None);
        }
        let mut cold = 0;
        loop {
            let first = idler.step(0);
            if first == Some(Step::Spin) {
                break;
            }
            assert_eq!(first, Some(Step::Park(IDLE_PARK_MIN)), "parks at once");
            assert_eq!(idler.step(0), Some(Step::Park(IDLE_PARK_MIN * 2)));
            assert_eq!(idler.step(1), None);
            cold += 1;
        }
        assert_eq!(cold, IDLE_SPIN_PROBE_EVERY - IDLE_SPIN_MISSES_MAX);
        // The probe's spins find work: the next spells spin again.
        assert_eq!(idler.step(1), None);
        assert_eq!(rounds_to_park(&mut idler), spin_phase);
        assert_eq!(idler.step(1), None);
        assert_eq!(idler.step(0), Some(Step::Spin));
        // Busy rounds without an idle round in between are no spell: they change nothing.
        let mut steady = Idler::new(IdleStrategy::Backoff);
        assert!((0..100).all(|_| steady.step(1).is_none()));
        assert_eq!(steady.step(0), Some(Step::Spin));
    }

    /// Review of idle: the count of missed spells saturated at `u32::MAX`, which is not a
    /// multiple of the probe period, so a consumer that had missed that many spells (a frame a
    /// millisecond for seven weeks) never probed again, and spinning never came back however
    /// high the rate rose. Spells that keep missing probe every `IDLE_SPIN_PROBE_EVERY`-th,
    /// however long they have been missing.
    #[test]
    fn spells_that_miss_for_ever_still_probe() {
        let mut idler = Idler::new(IdleStrategy::Backoff);
        // Where a long run at a low rate leaves the count (the same as missing that often).
        idler.misses = u32::MAX - 2 * IDLE_SPIN_PROBE_EVERY;
        let mut probes = Vec::new();
        for spell in 0..10 * IDLE_SPIN_PROBE_EVERY {
            if idler.step(0) == Some(Step::Spin) {
                probes.push(spell);
            }
            rounds_to_park(&mut idler);
            assert_eq!(idler.step(1), None, "the work came after a park: a miss");
        }
        let late = probes
            .iter()
            .filter(|&&s| s >= 5 * IDLE_SPIN_PROBE_EVERY)
            .count();
        assert_eq!(
            late, 5,
            "a probe every {IDLE_SPIN_PROBE_EVERY}th spell: {probes:?}"
        );
        assert!(
            probes
                .windows(2)
                .all(|w| w[1] - w[0] == IDLE_SPIN_PROBE_EVERY),
            "{probes:?}"
        );
    }

    /// A consumer that knows when its timers are due parks until then, within
    /// `IDLE_PARK_MIN..=IDLE_PARK_MAX`, instead of doubling from the minimum; `blocking` keeps
    /// its park.
    #[test]
    fn a_consumer_with_timers_parks_until_they_are_due() {
        let mut idler = Idler::new(IdleStrategy::Backoff);
        let due = Duration::from_millis(3);
        let steps: Vec<Step> = (0..200)
            .filter_map(|_| idler.step_until(0, Some(due)))
            .collect();
        let spin_phase = (IDLE_SPINS_MAX + IDLE_YIELDS_MAX) as usize;
        assert!(steps[spin_phase..].iter().all(|s| *s == Step::Park(due)));
        let tiny = Some(Duration::from_nanos(1));
        assert_eq!(idler.step_until(0, tiny), Some(Step::Park(IDLE_PARK_MIN)));
        let far = Some(Duration::from_secs(3600));
        assert_eq!(idler.step_until(0, far), Some(Step::Park(IDLE_PARK_MAX)));
        assert_eq!(idler.step_until(0, None), Some(Step::Park(IDLE_PARK_MIN)));
        let mut blocking = Idler::new(IdleStrategy::Blocking);
        assert_eq!(
            blocking.step_until(0, Some(due)),
            Some(Step::Park(IDLE_BLOCKING_PARK))
        );
    }

    #[test]
    fn busy_spin_never_parks_and_blocking_parks_at_once() {
        let mut spin = Idler::new(IdleStrategy::BusySpin);
        assert!((0..100_000).all(|_| spin.step(0) == Some(Step::Spin)));
        let mut blocking = Idler::new(IdleStrategy::Blocking);
        assert_eq!(blocking.step(0), Some(Step::Park(IDLE_BLOCKING_PARK)));
        assert_eq!(blocking.step(0), Some(Step::Park(IDLE_BLOCKING_PARK)));
        assert_eq!(blocking.step(1), None);
    }

    /// Awaiting a reply: work runs the next round at once; no work waits for the reply, not
    /// for the producers, and resets the backoff (the wait is short); not awaiting (a request
    /// slot free, or nothing in flight) is the strategy's step; `busy_spin` never waits.
    #[test]
    fn awaiting_a_reply_waits_for_it_and_otherwise_the_strategy_steps() {
        let timeout = Duration::from_millis(2);
        let mut idler = Idler::new(IdleStrategy::Backoff);
        let mut reference = Idler::new(IdleStrategy::Backoff);
        for round in 0..300 {
            let work = usize::from(round % 37 == 0);
            assert_eq!(
                idler.step_awaiting(work, false, timeout, None),
                reference.step(work),
                "round {round}: not awaiting is the strategy"
            );
        }
        assert_eq!(idler.step_awaiting(3, true, timeout, None), None);
        assert_eq!(
            idler.step_awaiting(0, true, timeout, None),
            Some(Step::Await(timeout))
        );
        assert_eq!(
            idler.step_awaiting(0, false, timeout, None),
            Some(Step::Spin),
            "the backoff starts afresh after a reply"
        );
        let mut blocking = Idler::new(IdleStrategy::Blocking);
        assert_eq!(
            blocking.step_awaiting(0, true, timeout, None),
            Some(Step::Await(timeout))
        );
        assert_eq!(
            blocking.step_awaiting(0, false, timeout, None),
            Some(Step::Park(IDLE_BLOCKING_PARK))
        );
        let mut spin = Idler::new(IdleStrategy::BusySpin).with_linger(Duration::from_millis(1));
        assert_eq!(spin.linger(), Duration::ZERO, "busy_spin never lingers");
        assert_eq!(spin.step_awaiting(0, true, timeout, None), Some(Step::Spin));
        let lingering = Idler::new(IdleStrategy::Backoff).with_linger(timeout);
        assert_eq!(lingering.linger(), timeout);
    }

    /// A task awaiting a reply is woken by the reply's task ([`spawn_ringing`]) the moment it
    /// finishes, not by its producers' rings (which cost them nothing while it waits) and not
    /// by the timeout.
    #[test]
    fn an_awaiting_task_is_woken_by_its_reply_not_by_its_producers() {
        let bell = Bell::task();
        let idle = TaskIdle::new(IdleStrategy::Backoff, bell.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let reply_after = Duration::from_millis(30);
        let (waited, finished) = runtime.block_on(async {
            let reply = spawn_ringing(&bell, tokio::time::sleep(reply_after));
            for _ in 0..10 {
                bell.ring();
            }
            assert!(!bell.0.parked.load(Ordering::Relaxed), "nobody announced");
            let start = Instant::now();
            idle.wait(Step::Await(Duration::from_secs(60)), || false)
                .await;
            (start.elapsed(), reply.is_finished())
        });
        assert!(finished, "woken once the reply's task finished");
        assert!(
            waited >= reply_after,
            "the producers' rings did not wake it"
        );
        assert!(
            waited < Duration::from_secs(30),
            "the reply woke it, not the timeout"
        );
    }

    /// A lingering task consumer is not woken by its producers: the bell is not announced, so
    /// a ring during the linger costs the producer no wake-up, and the frames of the whole
    /// linger are taken in one round after it.
    #[test]
    fn producers_do_not_wake_a_lingering_task_and_its_frames_wait_for_the_linger() {
        let bell = Bell::task();
        let (mut producer, mut ring) = rtrb::RingBuffer::<u32>::new(64);
        let linger = Duration::from_millis(30);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let idle = TaskIdle::new(IdleStrategy::Backoff, bell.clone()).with_linger(linger);
        for item in 0..10 {
            producer.push(item).expect("room");
            bell.ring();
        }
        assert!(!bell.0.parked.load(Ordering::Relaxed), "nobody announced");
        let start = Instant::now();
        runtime.block_on(idle.wait(Step::Linger(linger), || true));
        assert!(start.elapsed() >= linger, "the linger ran its whole time");
        let taken = std::iter::from_fn(|| ring.pop().ok()).count();
        assert_eq!(taken, 10, "one round takes every frame of the linger");
    }

    /// A consumer thread parked for an hour gets each item a producer pushes and rings for:
    /// the bell wakes it, not the timeout.
    #[test]
    fn a_parked_thread_wakes_when_its_ring_gets_data() {
        let (bell, parker) = Bell::thread();
        let (mut producer, mut ring) = rtrb::RingBuffer::<u32>::new(16);
        let (got, received) = mpsc::channel();
        let consumer_bell = bell.clone();
        let consumer = std::thread::spawn(move || {
            let idle = ThreadIdle::new(IdleStrategy::Blocking, consumer_bell, parker);
            let mut seen = 0;
            while seen < 100 {
                while let Ok(item) = ring.pop() {
                    seen += 1;
                    let _ = got.send(item);
                }
                if seen < 100 {
                    idle.park(Duration::from_secs(3600), || !ring.is_empty());
                }
            }
        });
        for item in 0..100 {
            // The consumer may or may not be parked: either way the item must arrive.
            producer.push(item).expect("room");
            bell.ring();
            let arrived = received.recv_timeout(Duration::from_secs(30));
            assert_eq!(arrived, Ok(item), "the parked consumer did not wake");
        }
        consumer.join().expect("the consumer ends");
    }

    #[test]
    fn ringing_a_consumer_that_is_not_parked_costs_no_wake() {
        let (bell, parker) = Bell::thread();
        bell.ring();
        // No token was left: a short park runs its whole timeout.
        let start = Instant::now();
        parker.park_timeout(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    /// A task parked for an hour on its runtime wakes when a producer on another thread
    /// pushes and rings.
    #[test]
    fn a_parked_task_wakes_when_its_ring_gets_data() {
        let bell = Bell::task();
        let (mut producer, mut ring) = rtrb::RingBuffer::<u32>::new(16);
        let (got, received) = mpsc::channel();
        let consumer_bell = bell.clone();
        let consumer = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let idle = TaskIdle::new(IdleStrategy::Blocking, consumer_bell);
                let mut seen = 0;
                while seen < 100 {
                    while let Ok(item) = ring.pop() {
                        seen += 1;
                        let _ = got.send(item);
                    }
                    if seen < 100 {
                        let park = Step::Park(Duration::from_secs(3600));
                        idle.wait(park, || !ring.is_empty()).await;
                    }
                }
            });
        });
        for item in 0..100 {
            producer.push(item).expect("room");
            bell.ring();
            let arrived = received.recv_timeout(Duration::from_secs(30));
            assert_eq!(arrived, Ok(item), "the parked task did not wake");
        }
        consumer.join().expect("the consumer ends");
    }
}
