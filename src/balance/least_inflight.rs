//! Fewest requests in flight from this proxy, relative to weight (nginx
//! `least_conn`, HAProxy `leastconn`). Ties are broken at random so equal
//! nodes share the load instead of the first one taking it all.

use super::{Balance, Candidate, Method};

pub static METHOD: Method = Method {
    name: "least_inflight",
    new: |_nodes| Box::new(LeastInflight),
};

#[derive(Debug)]
struct LeastInflight;

impl Balance for LeastInflight {
    fn pick(&self, candidates: &[Candidate]) -> Option<usize> {
        pick(candidates, &mut fastrand::Rng::new())
    }
}

pub fn pick(candidates: &[Candidate], rng: &mut fastrand::Rng) -> Option<usize> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    let start = rng.usize(..n);
    let mut best: Option<(&Candidate, f64)> = None;
    for i in 0..n {
        let c = &candidates[(start + i) % n];
        let score = (c.load.inflight as f64 + 1.0) / c.weight;
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::node::Load;

    fn cand(index: usize, weight: f64, inflight: u64) -> Candidate {
        Candidate {
            index,
            weight,
            load: Load {
                busy: inflight as f64,
                capacity: None,
                inflight,
                sent_since_scrape: 0,
                fresh: true,
            },
        }
    }

    #[test]
    fn picks_fewest_inflight_per_weight() {
        let mut rng = fastrand::Rng::with_seed(7);
        let c = [cand(0, 1.0, 5), cand(1, 1.0, 2), cand(2, 1.0, 9)];
        assert_eq!(pick(&c, &mut rng), Some(1));
        // weight 4 with 5 in flight beats weight 1 with 2
        let c = [cand(0, 4.0, 5), cand(1, 1.0, 2)];
        assert_eq!(pick(&c, &mut rng), Some(0));
        assert_eq!(pick(&[], &mut rng), None);
    }

    #[test]
    fn ties_are_spread() {
        let mut rng = fastrand::Rng::with_seed(1);
        let c = [cand(0, 1.0, 0), cand(1, 1.0, 0), cand(2, 1.0, 0)];
        let mut seen = [0; 3];
        for _ in 0..300 {
            if let Some(i) = pick(&c, &mut rng) {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
