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
//!    both capacities are known, busy / weight otherwise; when either status
//!    is stale, this proxy's in-flight counts / weight (the only figures the
//!    two have in common);
//! 3. when no node has an idle worker, the request waits in some node's
//!    backlog whatever the choice: the one of the two whose workers are
//!    less taken by other traffic than this proxy's wins, as this proxy's
//!    requests are known to be moving while a node full of other traffic
//!    (the case load feedback is for) may stay full for long.

use super::{Balance, Candidate, Method};

pub static METHOD: Method = Method {
    name: "busyness",
    new: |_nodes| Box::new(Busyness),
};

#[derive(Debug)]
struct Busyness;

impl Balance for Busyness {
    fn pick(&self, candidates: &[Candidate]) -> Option<usize> {
        pick(candidates, &mut fastrand::Rng::new())
    }
}

pub fn pick(candidates: &[Candidate], rng: &mut fastrand::Rng) -> Option<usize> {
    let with_idle = candidates.iter().filter(|c| has_idle_worker(c)).count();
    let all_full = with_idle == 0;
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
            let b_wins = if all_full {
                match foreign_share(b).total_cmp(&foreign_share(a)) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    std::cmp::Ordering::Equal => less_loaded(b, a),
                }
            } else {
                less_loaded(b, a)
            };
            Some(if b_wins { b.index } else { a.index })
        }
    }
}

/// False only when the node is known to have every worker busy.
fn has_idle_worker(c: &Candidate) -> bool {
    c.load
        .capacity
        .is_none_or(|cap| c.load.busy + 1.0 <= f64::from(cap))
}

/// Busy workers not held by this proxy's requests, relative to size (only
/// called when every candidate's capacity is known).
fn foreign_share(c: &Candidate) -> f64 {
    let foreign = (c.load.busy - c.load.inflight as f64).max(0.0);
    let cap = f64::from(c.load.capacity.unwrap_or(1).max(1));
    foreign / (cap * c.weight)
}

/// Whether `x` is less loaded than `y`, relative to size; on a tie, the
/// one that got fewer requests since its last report (per size).
fn less_loaded(x: &Candidate, y: &Candidate) -> bool {
    if !(x.load.fresh && y.load.fresh) {
        // Requests sent since the last good scrape grow without bound on a
        // stale node: no tie-break by them (the draw was random already).
        return (x.load.inflight as f64 + 1.0) / x.weight
            < (y.load.inflight as f64 + 1.0) / y.weight;
    }
    // Size: capacity x weight when both capacities are known, else weight.
    // Idle nodes of different sizes tie on load (0) and then share by
    // size through the tie-break, instead of the biggest taking every
    // request until it reports some load.
    let (sx, sy) = match (x.load.capacity, y.load.capacity) {
        (Some(cx), Some(cy)) if cx > 0 && cy > 0 => {
            (f64::from(cx) * x.weight, f64::from(cy) * y.weight)
        }
        _ => (x.weight, y.weight),
    };
    let (lx, ly) = (x.load.busy / sx, y.load.busy / sy);
    if lx != ly {
        return lx < ly;
    }
    (x.load.sent_since_scrape as f64 + 1.0) / sx < (y.load.sent_since_scrape as f64 + 1.0) / sy
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
                fresh: true,
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
    fn when_all_are_full_the_one_full_of_other_traffic_loses() {
        // a: full of other traffic; b, c: full of this proxy's requests
        let mut b = cand(1, 4.0, Some(4));
        b.load.inflight = 3;
        let mut c = cand(2, 5.0, Some(4));
        c.load.inflight = 4;
        let n = shares(&[cand(0, 4.0, Some(4)), b, c], 300);
        assert_eq!(n[0], 0, "{n:?}");
        assert!(n[1] > 0 && n[2] > 0, "{n:?}");
    }

    #[test]
    fn a_stale_node_is_compared_by_in_flight_requests() {
        // the fresh node's busy workers include other traffic; the stale
        // one's are only this proxy's: compare in-flight counts instead
        let mut stale = cand(0, 0.0, None);
        stale.load.fresh = false;
        stale.load.sent_since_scrape = 1000;
        let mut fresh = cand(1, 3.0, Some(8));
        fresh.load.sent_since_scrape = 0;
        let n = shares(&[stale, fresh], 2000);
        assert!(n[0] > 800 && n[1] > 800, "{n:?}");
        fresh.load.inflight = 2;
        let n = shares(&[stale, fresh], 200);
        assert_eq!(n, vec![200, 0]);
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
    fn idle_nodes_of_different_sizes_share_by_size() {
        let mut c = [cand(0, 0.0, Some(8)), cand(1, 0.0, Some(16))];
        let mut rng = fastrand::Rng::with_seed(3);
        let mut n = [0u64; 2];
        for _ in 0..300 {
            // sequential requests: each pick is counted before the next
            if let Some(i) = pick(&c, &mut rng) {
                n[i] += 1;
                c[i].load.sent_since_scrape += 1;
            }
        }
        // shares follow capacity (1:2), give or take one request
        assert!(
            (n[0] as i64 - 100).abs() <= 1 && (n[1] as i64 - 200).abs() <= 1,
            "{n:?}"
        );
    }

    #[test]
    fn empty_and_single() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(pick(&[], &mut rng), None);
        assert_eq!(pick(&[cand(3, 99.0, Some(1))], &mut rng), Some(3));
    }
}
