//! Balancing by the load the nodes report themselves.
//!
//! Each candidate's `Load` is the node's scraped busy workers corrected by
//! the requests this proxy sent since that scrape (or, when the status is
//! stale, this proxy's own in-flight count). Choosing "the least loaded" on
//! such data herds every request onto one node until the next scrape
//! (Mitzenmacher, "How useful is old information?"), so the choice is the
//! power of two random choices:
//!
//! 1. nodes known to have no idle worker are left out while any other node
//!    may have one (a request sent there would wait in the node's backlog);
//! 2. two distinct candidates are drawn at random, and the one with the
//!    lower load relative to its size wins: busy / (capacity x weight) when
//!    both capacities are known, busy / weight otherwise.

use super::Candidate;

pub fn pick(candidates: &[Candidate], rng: &mut fastrand::Rng) -> Option<usize> {
    let with_idle = candidates.iter().filter(|c| has_idle_worker(c)).count();
    let pool: Vec<&Candidate> = if with_idle > 0 && with_idle < candidates.len() {
        candidates.iter().filter(|c| has_idle_worker(c)).collect()
    } else {
        candidates.iter().collect()
    };
    match pool.len() {
        0 => None,
        1 => Some(pool[0].index),
        n => {
            let a = rng.usize(..n);
            let b = (a + 1 + rng.usize(..n - 1)) % n;
            let (a, b) = (pool[a], pool[b]);
            Some(if less_loaded(b, a) { b.index } else { a.index })
        }
    }
}

/// False only when the node is known to have every worker busy.
fn has_idle_worker(c: &Candidate) -> bool {
    c.load
        .capacity
        .is_none_or(|cap| c.load.busy + 1.0 <= f64::from(cap))
}

/// Whether `x` is less loaded than `y`, relative to size; on a tie, the
/// one that got fewer requests since its last report (per weight).
fn less_loaded(x: &Candidate, y: &Candidate) -> bool {
    let (lx, ly) = match (x.load.capacity, y.load.capacity) {
        (Some(cx), Some(cy)) if cx > 0 && cy > 0 => (
            (x.load.busy + 1.0) / (f64::from(cx) * x.weight),
            (y.load.busy + 1.0) / (f64::from(cy) * y.weight),
        ),
        _ => (
            (x.load.busy + 1.0) / x.weight,
            (y.load.busy + 1.0) / y.weight,
        ),
    };
    if lx != ly {
        return lx < ly;
    }
    (x.load.sent_since_scrape as f64 + 1.0) / x.weight
        < (y.load.sent_since_scrape as f64 + 1.0) / y.weight
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::node::Load;

    fn cand(index: usize, busy: f64, capacity: Option<u32>) -> Candidate {
        Candidate {
            index,
            weight: 1.0,
            load: Load {
                busy,
                capacity,
                inflight: 0,
                sent_since_scrape: 0,
            },
        }
    }

    fn shares(c: &[Candidate], rounds: usize) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut n = vec![0; c.len()];
        for _ in 0..rounds {
            if let Some(i) = pick(c, &mut rng) {
                n[i] += 1;
            }
        }
        n
    }

    #[test]
    fn a_busy_node_gets_few_requests() {
        let c = [
            cand(0, 14.0, Some(16)),
            cand(1, 2.0, Some(16)),
            cand(2, 3.0, Some(16)),
        ];
        let n = shares(&c, 3000);
        // the busy node only wins when drawn with... never: it is the most loaded
        assert_eq!(n[0], 0, "{n:?}");
        assert!(n[1] > 0 && n[2] > 0, "{n:?}");
    }

    #[test]
    fn never_picks_a_full_node_while_another_has_room() {
        let c = [cand(0, 16.0, Some(16)), cand(1, 15.0, Some(16))];
        assert_eq!(shares(&c, 200), vec![0, 200]);
        // all full: still picks (the request has to go somewhere)
        let c = [cand(0, 16.0, Some(16)), cand(1, 16.0, Some(16))];
        assert_eq!(shares(&c, 200).iter().sum::<usize>(), 200);
    }

    #[test]
    fn equal_nodes_share_evenly() {
        let c = [
            cand(0, 0.0, Some(8)),
            cand(1, 0.0, Some(8)),
            cand(2, 0.0, Some(8)),
        ];
        let n = shares(&c, 3000);
        assert!(n.iter().all(|&k| k > 800), "{n:?}");
    }

    #[test]
    fn relative_to_capacity_and_weight() {
        // 10 busy of 100 is lighter than 5 busy of 10
        let c = [cand(0, 10.0, Some(100)), cand(1, 5.0, Some(10))];
        assert_eq!(shares(&c, 100), vec![100, 0]);
        let mut heavy = cand(1, 5.0, None);
        heavy.weight = 10.0;
        let c = [cand(0, 1.0, None), heavy];
        // 6/10 < 2/1
        assert_eq!(shares(&c, 100), vec![0, 100]);
    }

    #[test]
    fn empty_and_single() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(pick(&[], &mut rng), None);
        assert_eq!(pick(&[cand(3, 99.0, Some(1))], &mut rng), Some(3));
    }
}
