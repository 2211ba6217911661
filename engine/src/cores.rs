//! The core plan: which CPU core each long-lived thread of `hotpath run` is pinned to. The
//! readers take the cores `readers.cores` names; every other thread gets a core no reader
//! uses, so nothing ever competes with a reader for its core. Pure ([`CorePlan::new`] takes
//! the machine's cores and returns the plan), so every machine size is unit-tested here;
//! [`pin`] is the thin shell.
//!
//! With `F` cores left after the readers (in ascending order `f0, f1, ...`):
//!
//! | `F` | Redis writer | Kinesis writer | sidecar | control plane |
//! |---|---|---|---|---|
//! | 0 | not pinned | not pinned | not pinned | not pinned |
//! | 1 | f0 | f0 | f0 | f0 |
//! | 2 | f0 | f1 | f1 | f1 |
//! | 3 | f0 | f1 | f2 | f2 |
//! | 4 or more | f0 | f1 | f2 | f3 |
//!
//! Sinks that are not enabled take no core: the enabled ones move up (a run with Redis alone
//! gives it `f0` and the sidecar `f1`). The Redis writer comes first because its latency is
//! what readers of Redis wait for; the Kinesis writer lingers to batch anyway, and the
//! sidecar and the control plane are cold (REST pages, scrapes), so they share last.
//! With `F = 0` (every core runs a reader) nothing is pinned and the kernel shares the cores.

use serde::Serialize;

/// The core each thread other than the readers is pinned to; `None`: not pinned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CorePlan {
    /// The Redis writer (`hotpath-redis`).
    pub redis: Option<usize>,
    /// The Kinesis writer (`hotpath-kinesis`).
    pub kinesis: Option<usize>,
    /// The reliability sidecar (`hotpath-sidecar`).
    pub sidecar: Option<usize>,
    /// The control plane (`hotpath-control`) and pair discovery (`hotpath-discovery`).
    pub control: Option<usize>,
}

impl CorePlan {
    /// The plan on a machine with cores `machine` (any order) when the readers run on
    /// `readers`, with the Redis and Kinesis writers enabled as said.
    pub fn new(machine: &[usize], readers: &[usize], redis: bool, kinesis: bool) -> CorePlan {
        let mut free: Vec<usize> = machine
            .iter()
            .copied()
            .filter(|c| !readers.contains(c))
            .collect();
        free.sort_unstable();
        free.dedup();
        if free.is_empty() {
            return CorePlan::default();
        }
        // The roles in order of priority; each takes the next free core while there is one,
        // then shares the last one given.
        let mut next = 0;
        let mut take = || {
            let core = free[next.min(free.len() - 1)];
            next += 1;
            Some(core)
        };
        let redis = if redis { take() } else { None };
        let kinesis = if kinesis { take() } else { None };
        let sidecar = take();
        let control = take();
        CorePlan {
            redis,
            kinesis,
            sidecar,
            control,
        }
    }

    /// The plan on this machine (its cores as the kernel reports them to `core_affinity`).
    pub fn on_this_machine(readers: &[usize], redis: bool, kinesis: bool) -> CorePlan {
        let machine: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        CorePlan::new(&machine, readers, redis, kinesis)
    }
}

/// Pins the calling thread to `core`, if any. Returns whether it pinned.
pub fn pin(core: Option<usize>) -> bool {
    core.is_some_and(|id| core_affinity::set_for_current(core_affinity::CoreId { id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    fn plan(n: usize, readers: &[usize], redis: bool, kinesis: bool) -> [Option<usize>; 4] {
        let p = CorePlan::new(&cores(n), readers, redis, kinesis);
        [p.redis, p.kinesis, p.sidecar, p.control]
    }

    /// The table of the module's documentation (and of ARCHITECTURE.md), for 2, 4, 8 and 16
    /// cores with both sinks on.
    #[test]
    fn each_sink_gets_its_own_core_when_there_are_enough() {
        // 2 cores, one reader: everything else shares core 1.
        assert_eq!(plan(2, &[0], true, true), [Some(1); 4]);
        // 4 cores, two readers: Redis alone on 2; Kinesis, sidecar and control share 3.
        assert_eq!(
            plan(4, &[0, 1], true, true),
            [Some(2), Some(3), Some(3), Some(3)]
        );
        // 4 cores, one reader: Redis 1, Kinesis 2, sidecar and control 3.
        assert_eq!(
            plan(4, &[0], true, true),
            [Some(1), Some(2), Some(3), Some(3)]
        );
        // 8 cores, four readers: one core each.
        assert_eq!(
            plan(8, &[0, 1, 2, 3], true, true),
            [Some(4), Some(5), Some(6), Some(7)]
        );
        // 16 cores, twelve readers: one core each; more free cores stay free.
        let readers: Vec<usize> = (0..12).collect();
        assert_eq!(
            plan(16, &readers, true, true),
            [Some(12), Some(13), Some(14), Some(15)]
        );
        let readers: Vec<usize> = (0..8).collect();
        assert_eq!(
            plan(16, &readers, true, true),
            [Some(8), Some(9), Some(10), Some(11)]
        );
    }

    /// Regression (issue 11): both sinks pinned themselves to the same first free core.
    #[test]
    fn the_two_sinks_never_share_a_core_when_two_are_free() {
        let p = CorePlan::new(&[0, 1, 2], &[0], true, true);
        assert_ne!(p.redis, p.kinesis);
        assert_eq!((p.redis, p.kinesis), (Some(1), Some(2)));
    }

    #[test]
    fn sinks_that_are_off_take_no_core() {
        assert_eq!(
            plan(4, &[0], true, false),
            [Some(1), None, Some(2), Some(3)]
        );
        assert_eq!(
            plan(4, &[0], false, true),
            [None, Some(1), Some(2), Some(3)]
        );
        assert_eq!(plan(3, &[0], false, false), [None, None, Some(1), Some(2)]);
    }

    #[test]
    fn nothing_is_pinned_when_every_core_runs_a_reader() {
        assert_eq!(plan(2, &[0, 1], true, true), [None; 4]);
        assert_eq!(CorePlan::new(&[], &[0], true, true), CorePlan::default());
    }

    /// Reader cores in any order, cores listed out of order or twice, and readers on cores the
    /// machine does not list: only the machine's cores no reader uses are given.
    #[test]
    fn the_free_cores_are_the_machines_minus_the_readers_in_order() {
        let p = CorePlan::new(&[7, 3, 5, 3, 1], &[5, 9], true, true);
        assert_eq!(
            [p.redis, p.kinesis, p.sidecar, p.control],
            [Some(1), Some(3), Some(7), Some(7)]
        );
    }
}
