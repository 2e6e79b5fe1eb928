//! Smooth weighted round robin, as nginx does it: every pick adds each
//! candidate's weight to its running score, takes the highest, and subtracts
//! the total from the winner. Weights 5,1,1 give a,a,b,a,c,a,a: spread out,
//! not bunched.

use std::sync::Mutex;

use super::{Balance, Candidate, Method};

pub static METHOD: Method = Method {
    name: "round_robin",
    new: |nodes| Box::new(SmoothWeightedRoundRobin::new(nodes)),
};

/// Scale for fractional (slow-start) weights.
const SCALE: f64 = 100.0;

#[derive(Debug)]
pub struct SmoothWeightedRoundRobin {
    /// Running score per node index of the group.
    current: Mutex<Vec<i64>>,
}

impl SmoothWeightedRoundRobin {
    pub fn new(nodes: usize) -> Self {
        SmoothWeightedRoundRobin {
            current: Mutex::new(vec![0; nodes]),
        }
    }

    pub fn pick(&self, candidates: &[Candidate]) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for c in candidates {
            let w = ((c.weight * SCALE).round() as i64).max(1);
            let Some(score) = current.get_mut(c.index) else {
                continue;
            };
            *score += w;
            total += w;
            let score = *score;
            if best.is_none_or(|b| score > current[b]) {
                best = Some(c.index);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(b)
    }
}

impl Balance for SmoothWeightedRoundRobin {
    fn pick(&self, candidates: &[Candidate]) -> Option<usize> {
        SmoothWeightedRoundRobin::pick(self, candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::node::Load;

    fn cand(index: usize, weight: f64) -> Candidate {
        Candidate {
            index,
            weight,
            load: Load {
                busy: 0.0,
                capacity: None,
                inflight: 0,
                sent_since_scrape: 0,
                fresh: true,
            },
        }
    }

    #[test]
    fn smooth_sequence_matches_nginx() {
        let rr = SmoothWeightedRoundRobin::new(3);
        let cands = [cand(0, 5.0), cand(1, 1.0), cand(2, 1.0)];
        let seq: Vec<usize> = (0..7).filter_map(|_| rr.pick(&cands)).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_follow_weights_and_skip_missing_candidates() {
        let rr = SmoothWeightedRoundRobin::new(3);
        let cands = [cand(0, 3.0), cand(2, 1.0)];
        let mut counts = [0; 3];
        for _ in 0..400 {
            if let Some(i) = rr.pick(&cands) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts, [300, 0, 100]);
        assert_eq!(rr.pick(&[]), None);
    }
}
