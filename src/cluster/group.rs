//! A group: its nodes (config + live state) and its balancer.
//!
//! `pick` decides which nodes may be chosen (usable, not draining, weight
//! above 0, not already tried by this request; backups only when no primary
//! is left) and lets the balancer rank them.

use std::sync::Arc;
use std::time::Instant;

use crate::balance::{Balance, Candidate};
use crate::cluster::affinity::GroupStats;
use crate::cluster::node::Node;
use crate::cluster::queue::GroupQueue;
use crate::config::GroupConfig;

#[derive(Debug)]
pub struct Group {
    pub config: GroupConfig,
    pub nodes: Vec<Node>,
    pub balancer: Box<dyn Balance>,
    /// What affinity and content-sync handling did; carried over reloads
    /// by group name, like the nodes' live state.
    pub stats: Arc<GroupStats>,
    /// Requests waiting for a node under its limit (`cluster::queue`);
    /// carried over reloads by group name.
    pub queue: Arc<GroupQueue>,
}

impl Group {
    pub fn new(config: GroupConfig, nodes: Vec<Node>, stats: Arc<GroupStats>) -> Group {
        let balancer = config.balance.balancer(nodes.len());
        Group {
            config,
            nodes,
            balancer,
            stats,
            queue: Arc::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Choose a node for a request, skipping the indices in `tried`.
    pub fn pick(&self, tried: &[usize], now: Instant) -> Option<usize> {
        let primaries = self.candidates(false, tried, now);
        if !primaries.is_empty() {
            return self.balancer.pick(&primaries);
        }
        let backups = self.candidates(true, tried, now);
        self.balancer.pick(&backups)
    }

    fn candidates(&self, backup: bool, tried: &[usize], now: Instant) -> Vec<Candidate> {
        let mut any_answering = false;
        let mut all: Vec<(Candidate, bool, bool)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| {
                n.config.backup == backup && n.weight() > 0 && !n.draining() && !tried.contains(i)
            })
            .filter_map(|(index, n)| {
                let view = n.live.balance_view(&self.config, &n.config, now)?;
                let known = !self.config.scrape.enabled || view.known_up;
                any_answering |= !view.stalled;
                let candidate = Candidate {
                    index,
                    weight: f64::from(n.weight()) * view.ramp,
                    load: view.load,
                };
                Some((candidate, known, view.stalled))
            })
            .collect();
        // Held-back nodes (they stopped answering) serve only when no other
        // node can; nodes whose health is not known yet (just added) only
        // when no node is known to be up.
        if any_answering {
            all.retain(|(_, _, stalled)| !*stalled);
        }
        if all.iter().any(|(_, known, _)| *known) {
            all.retain(|(_, known, _)| *known);
        }
        all.into_iter().map(|(c, _, _)| c).collect()
    }

    /// The live state of node `index`.
    pub fn live(&self, index: usize) -> Option<&Arc<crate::cluster::node::NodeLive>> {
        self.nodes.get(index).map(|n| &n.live)
    }
}
