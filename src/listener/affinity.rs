//! Which CPU each worker thread of the proxy runs on (`[server]
//! cpu_affinity`), as nginx's `worker_cpu_affinity` and HAProxy's
//! `cpu-map`.
//!
//! Why: with as many workers as cores and other busy processes beside
//! them (a load generator, a local node), the kernel sometimes puts two
//! workers on one core and leaves them there; each then waits for the
//! other's time slices, and one request in a hundred waits milliseconds
//! (p99 1.0 ms in one run, 3.4 ms in the next; one worker per core held
//! it at 1.0–1.1 ms in every run; benches/README.md, "Seventeenth
//! session"). Off by default, as nginx's: a pinned thread cannot move
//! away from a core something else keeps busy.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::config::CpuAffinity;

/// The CPU of each of `workers` worker threads, in order (`None`: not
/// pinned). `allowed`: the CPUs the process may run on, for `auto`.
pub fn plan(affinity: &CpuAffinity, workers: usize, allowed: &[usize]) -> Vec<Option<usize>> {
    let from = |cpus: &[usize]| -> Vec<Option<usize>> {
        if cpus.is_empty() {
            return vec![None; workers];
        }
        (0..workers).map(|i| Some(cpus[i % cpus.len()])).collect()
    };
    match affinity {
        CpuAffinity::Off => vec![None; workers],
        CpuAffinity::Auto => from(allowed),
        CpuAffinity::Cpus(cpus) => from(cpus),
    }
}

/// The CPUs the calling thread may run on (empty when that cannot be
/// read).
pub fn allowed() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect()
}

/// Keep the calling thread on `cpu`.
pub fn pin_this_thread(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (setting, workers, CPUs the process may use, each worker's CPU)
    type Case<'a> = (CpuAffinity, usize, &'a [usize], &'a [Option<usize>]);

    #[test]
    fn workers_take_the_cpus_in_order_and_over_again() {
        let cpus = |v: &[usize]| CpuAffinity::Cpus(v.to_vec());
        let table: &[Case<'_>] = &[
            (CpuAffinity::Off, 2, &[0, 1], &[None, None]),
            (CpuAffinity::Auto, 2, &[0, 1], &[Some(0), Some(1)]),
            // Started under `taskset -c 2,5`: the workers stay inside it.
            (CpuAffinity::Auto, 3, &[2, 5], &[Some(2), Some(5), Some(2)]),
            (CpuAffinity::Auto, 1, &[3], &[Some(3)]),
            // The set could not be read: nothing pinned.
            (CpuAffinity::Auto, 2, &[], &[None, None]),
            (cpus(&[1]), 2, &[0, 1], &[Some(1), Some(1)]),
            (
                cpus(&[3, 0, 2]),
                4,
                &[0, 1],
                &[Some(3), Some(0), Some(2), Some(3)],
            ),
        ];
        for (affinity, workers, allowed, want) in table {
            assert_eq!(
                plan(affinity, *workers, allowed),
                want.to_vec(),
                "{affinity:?} with {workers} workers on {allowed:?}"
            );
        }
    }

    /// The calling thread's own set is readable, and pinning it to a CPU
    /// of that set leaves it on that CPU alone (a thread of its own, so
    /// the test harness's threads keep theirs).
    #[test]
    fn a_thread_is_pinned_to_one_cpu_it_may_use() {
        let cpus = allowed();
        assert!(!cpus.is_empty());
        let last = *cpus.last().expect("a CPU");
        let after = std::thread::spawn(move || {
            pin_this_thread(last).expect("pinned");
            allowed()
        })
        .join()
        .expect("thread");
        assert_eq!(after, vec![last]);
        assert!(pin_this_thread(CpuSet::count()).is_err());
    }
}
