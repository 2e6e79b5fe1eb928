//! Choosing a node among the usable ones of a group.
//!
//! The group (`cluster::group`) decides which nodes may be chosen (health,
//! drain, backup, nodes already tried); a `Balancer` only ranks the
//! candidates it is given. Each method lives in its own file; adding one
//! touches this enum and a new file.

pub mod affinity;
mod busyness;
mod least_inflight;
mod round_robin;

pub use busyness::pick as pick_busyness;
pub use least_inflight::pick as pick_least_inflight;
pub use round_robin::SmoothWeightedRoundRobin;

use crate::cluster::node::Load;
use crate::config::BalanceMethod;

/// A node the balancer may choose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Index of the node in its group.
    pub index: usize,
    /// Configured weight times the slow-start ramp; above 0.
    pub weight: f64,
    pub load: Load,
}

/// A group's balancing method with any state it keeps between picks.
#[derive(Debug)]
pub enum Balancer {
    Busyness,
    RoundRobin(SmoothWeightedRoundRobin),
    LeastInflight,
}

impl Balancer {
    pub fn new(method: BalanceMethod, nodes: usize) -> Balancer {
        match method {
            BalanceMethod::Busyness => Balancer::Busyness,
            BalanceMethod::RoundRobin => Balancer::RoundRobin(SmoothWeightedRoundRobin::new(nodes)),
            BalanceMethod::LeastInflight => Balancer::LeastInflight,
        }
    }

    /// The chosen node's index in the group, or None when there is no
    /// candidate.
    pub fn pick(&self, candidates: &[Candidate]) -> Option<usize> {
        match self {
            Balancer::Busyness => pick_busyness(candidates, &mut fastrand::Rng::new()),
            Balancer::RoundRobin(rr) => rr.pick(candidates),
            Balancer::LeastInflight => pick_least_inflight(candidates, &mut fastrand::Rng::new()),
        }
    }
}
