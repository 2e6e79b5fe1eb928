//! A group: its nodes (config + live state) and its balancer.
//!
//! `pick` decides which nodes may be chosen (usable, not draining, weight
//! above 0, not already tried by this request; backups only when no primary
//! is left) and lets the balancer rank them.

use std::sync::Arc;
use std::time::Instant;

use crate::balance::{Balancer, Candidate};
use crate::cluster::affinity::GroupStats;
use crate::cluster::node::Node;
use crate::config::GroupConfig;

#[derive(Debug)]
pub struct Group {
    pub config: GroupConfig,
    pub nodes: Vec<Node>,
    pub balancer: Balancer,
    /// What affinity and content-sync handling did; carried over reloads
    /// by group name, like the nodes' live state.
    pub stats: Arc<GroupStats>,
}

impl Group {
    pub fn new(config: GroupConfig, nodes: Vec<Node>, stats: Arc<GroupStats>) -> Group {
        let balancer = Balancer::new(config.balance, nodes.len());
        Group {
            config,
            nodes,
            balancer,
            stats,
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
        let all: Vec<Candidate> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| {
                n.config.backup == backup
                    && n.config.weight > 0
                    && !n.config.drain
                    && !tried.contains(i)
                    && n.live.usable(now)
            })
            .map(|(index, n)| Candidate {
                index,
                weight: f64::from(n.config.weight) * n.live.ramp(&self.config, now),
                load: n.live.load(&self.config, &n.config, now),
            })
            .collect();
        // Nodes whose health is not known yet (just added) serve only when no
        // node is known to be up.
        let known: Vec<Candidate> = all
            .iter()
            .filter(|c| !self.config.scrape.enabled || self.nodes[c.index].live.known_up())
            .copied()
            .collect();
        if known.is_empty() {
            all
        } else {
            known
        }
    }

    /// The live state of node `index`.
    pub fn live(&self, index: usize) -> Option<&Arc<crate::cluster::node::NodeLive>> {
        self.nodes.get(index).map(|n| &n.live)
    }
}
