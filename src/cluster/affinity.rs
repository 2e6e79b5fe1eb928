//! Session affinity and content-sync choices on a group.
//!
//! `Group::pick` balances by load; the methods here choose a node for a
//! request that carries a session (rendezvous order from
//! `balance::affinity`), find a node by its `insert`-mode id, and tell
//! whether a route's primary node can take a write. The counters shown in
//! the status JSON live in each group's `GroupStats`, which a reload carries
//! over by group name like the nodes' live state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::balance::affinity::{node_id, rank, SessionNode};
use crate::cluster::group::Group;
use crate::cluster::snapshot::{
    AffinityNodeSnapshot, AffinitySnapshot, ContentSyncSnapshot, SwitchCounts,
};
use crate::config::{AffinityMode, Config};

/// Why a session's request went to another node than its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    /// Down, or failed this very request.
    Down,
    /// Known to have no idle worker while another node has one.
    Saturated,
    /// Draining, and the session is new.
    Draining,
}

impl SwitchReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchReason::Down => "down",
            SwitchReason::Saturated => "saturated",
            SwitchReason::Draining => "draining",
        }
    }
}

/// The node chosen for a session's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPick {
    /// The node to use.
    pub index: usize,
    /// The session's own node (first in its hash order).
    pub home: usize,
    /// Why `index` is not `home`; None when it is.
    pub switched: Option<SwitchReason>,
}

impl Group {
    /// The order in which the session `key` tries this group's nodes
    /// (weight 0 left out, backups last).
    pub fn session_order(&self, key: &[u8]) -> Vec<usize> {
        let nodes: Vec<SessionNode<'_>> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(index, n)| SessionNode {
                index,
                name: n.config.name.as_str(),
                weight: f64::from(n.weight()),
                backup: n.config.backup,
            })
            .collect();
        rank(key, &nodes)
    }

    /// Choose a node for a request of session `key`: the first node of the
    /// session's order that is usable, not already tried, not draining
    /// (unless the session is `existing`) and not saturated while a later
    /// one is not. None when no node is usable.
    pub fn pick_for_session(
        &self,
        key: &[u8],
        existing: bool,
        tried: &[usize],
        now: Instant,
    ) -> Option<SessionPick> {
        let order = self.session_order(key);
        let home = *order.first()?;
        let mut first_reason: Option<SwitchReason> = None;
        let mut saturated_fallback: Option<usize> = None;
        for &i in &order {
            let node = &self.nodes[i];
            let reason = if tried.contains(&i) || !node.usable(now) {
                Some(SwitchReason::Down)
            } else if node.draining() && (!existing || node.operator_drained()) {
                Some(SwitchReason::Draining)
            } else if self.saturated(i, now) {
                saturated_fallback.get_or_insert(i);
                Some(SwitchReason::Saturated)
            } else {
                None
            };
            match reason {
                None => {
                    return Some(SessionPick {
                        index: i,
                        home,
                        switched: (i != home).then(|| first_reason.unwrap_or(SwitchReason::Down)),
                    })
                }
                Some(r) => {
                    first_reason.get_or_insert(r);
                }
            }
        }
        // Every usable node is saturated: the first of them in the order.
        saturated_fallback.map(|i| SessionPick {
            index: i,
            home,
            switched: (i != home).then(|| first_reason.unwrap_or(SwitchReason::Down)),
        })
    }

    /// Whether node `index` is known to have no idle worker now.
    pub fn saturated(&self, index: usize, now: Instant) -> bool {
        let Some(n) = self.nodes.get(index) else {
            return false;
        };
        let load = n.live.load(&self.config, &n.config, now);
        load.capacity
            .is_some_and(|cap| load.busy + 1.0 > f64::from(cap))
    }

    /// The opaque `insert`-mode id of node `index`.
    pub fn node_id(&self, index: usize) -> String {
        node_id(self.name(), &self.nodes[index].config.name)
    }

    /// The node whose `insert`-mode id is `id`.
    pub fn node_by_id(&self, id: &str) -> Option<usize> {
        if id.len() != 16 {
            return None;
        }
        (0..self.nodes.len()).find(|&i| self.node_id(i) == id)
    }

    /// Whether some node of weight above 0 not in `tried` may take a
    /// request now (backups included).
    pub fn any_available(&self, tried: &[usize], now: Instant) -> bool {
        (0..self.nodes.len())
            .any(|i| self.nodes[i].weight() > 0 && self.node_available(i, tried, now))
    }

    /// Whether some available node not in `excluded` has an idle worker
    /// (or an unknown capacity).
    pub fn any_unsaturated(&self, excluded: &[usize], now: Instant) -> bool {
        (0..self.nodes.len()).any(|i| {
            self.nodes[i].weight() > 0
                && self.node_available(i, excluded, now)
                && !self.saturated(i, now)
        })
    }

    /// The node named `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.config.name == name)
    }

    /// Whether node `index` may take a request now: usable, not draining
    /// and not already tried (weight and backup do not matter: used for a
    /// route's primary and for `insert`-mode sessions, which name their node).
    pub fn node_available(&self, index: usize, tried: &[usize], now: Instant) -> bool {
        self.nodes
            .get(index)
            .is_some_and(|n| !tried.contains(&index) && !n.draining() && n.usable(now))
    }
}

// ---------------------------------------------------------------------------
// Counters for the status JSON, per group, carried over reloads.

#[derive(Debug, Default)]
struct NodeCounts {
    session_requests: u64,
    switched_away: u64,
}

/// What affinity and content-sync handling did in one group.
#[derive(Debug, Default)]
pub struct GroupStats {
    session_requests: AtomicU64,
    cookies_set: AtomicU64,
    switches: [AtomicU64; 3],
    strict_refusals: AtomicU64,
    nodes: Mutex<BTreeMap<String, NodeCounts>>,
    retry_on_404: AtomicU64,
    retry_on_404_recovered: AtomicU64,
    primary_requests: AtomicU64,
    primary_unavailable: AtomicU64,
    primary_fallback: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl GroupStats {
    /// A session's request was sent to `node`; `home` when it was moved
    /// off its own node for `reason`.
    pub fn session_request(&self, node: &str, switched: Option<(&str, SwitchReason)>) {
        inc(&self.session_requests);
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.entry(node.to_owned()).or_default().session_requests += 1;
        if let Some((home, reason)) = switched {
            nodes.entry(home.to_owned()).or_default().switched_away += 1;
            inc(&self.switches[reason as usize]);
        }
    }

    pub fn cookie_set(&self) {
        inc(&self.cookies_set);
    }

    /// A session's request refused by `affinity_strict`.
    pub fn strict_refusal(&self) {
        inc(&self.strict_refusals);
    }

    pub fn retried_404(&self) {
        inc(&self.retry_on_404);
    }

    pub fn recovered_404(&self) {
        inc(&self.retry_on_404_recovered);
    }

    pub fn primary_request(&self) {
        inc(&self.primary_requests);
    }

    pub fn primary_unavailable(&self) {
        inc(&self.primary_unavailable);
    }

    pub fn primary_fallback(&self) {
        inc(&self.primary_fallback);
    }
}

/// The affinity part of a group's snapshot.
pub fn affinity_snapshot(group: &Group) -> AffinitySnapshot {
    let a = &group.config.affinity;
    let s = &group.stats;
    let counts = s.nodes.lock().unwrap_or_else(|p| p.into_inner());
    let nodes = group
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let c = counts.get(&n.config.name);
            AffinityNodeSnapshot {
                name: n.config.name.clone(),
                id: group.node_id(i),
                session_requests_total: c.map_or(0, |c| c.session_requests),
                sessions_switched_total: c.map_or(0, |c| c.switched_away),
            }
        })
        .collect();
    AffinitySnapshot {
        mode: a.mode.as_str().to_owned(),
        strict: a.strict,
        cookies: match a.mode {
            AffinityMode::Off => Vec::new(),
            AffinityMode::Cookie => a.cookies.clone(),
            AffinityMode::Insert => vec![a.insert_cookie.clone()],
        },
        session_requests_total: get(&s.session_requests),
        cookies_set_total: get(&s.cookies_set),
        switches_total: SwitchCounts {
            down: get(&s.switches[SwitchReason::Down as usize]),
            saturated: get(&s.switches[SwitchReason::Saturated as usize]),
            draining: get(&s.switches[SwitchReason::Draining as usize]),
        },
        strict_refusals_total: get(&s.strict_refusals),
        nodes,
    }
}

/// The content-sync part of a group's snapshot.
pub fn content_sync_snapshot(group: &Group, config: &Config) -> ContentSyncSnapshot {
    let s = &group.stats;
    let routes = config.routes.iter().filter(|r| r.group == group.name());
    let mut primaries: Vec<String> = Vec::new();
    let mut retry_on_404 = false;
    for r in routes {
        retry_on_404 |= r.retry_on_404;
        if let Some(p) = &r.primary {
            if !primaries.contains(p) {
                primaries.push(p.clone());
            }
        }
    }
    ContentSyncSnapshot {
        retry_on_404,
        retry_on_404_total: get(&s.retry_on_404),
        retry_on_404_recovered_total: get(&s.retry_on_404_recovered),
        primaries,
        primary_requests_total: get(&s.primary_requests),
        primary_unavailable_total: get(&s.primary_unavailable),
        primary_fallback_total: get(&s.primary_fallback),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::cluster::node::{Node, NodeLive};

    /// A group "web" over nodes named `names`; `extra` is added to every node.
    fn group(names: &[&str], extra: &[&str]) -> Group {
        let mut text = "[[group]]\nname = \"web\"\naffinity = \"cookie\"\n".to_owned();
        for (i, (name, more)) in names.iter().zip(extra).enumerate() {
            text.push_str(&format!(
                "[[group.node]]\nname = \"{name}\"\naddress = \"127.0.0.1:{}\"\n{more}\n",
                8001 + i
            ));
        }
        let config = crate::config::parse(&text, Path::new("t.toml")).expect("valid");
        let gc = config.groups[0].clone();
        let nodes = gc
            .nodes
            .iter()
            .map(|nc| Node {
                config: nc.clone(),
                live: Arc::new(NodeLive::new(false)),
                operator: Arc::default(),
            })
            .collect();
        Group::new(gc, nodes, Arc::default())
    }

    fn down(g: &Group, i: usize) {
        g.nodes[i].live.record_failure(&g.config, "test");
    }

    #[test]
    fn a_session_keeps_its_node() {
        let g = group(&["a", "b", "c"], &["", "", ""]);
        let now = Instant::now();
        for k in 0..50 {
            let key = format!("k{k}");
            let p = g.pick_for_session(key.as_bytes(), true, &[], now).unwrap();
            assert_eq!(p.index, p.home);
            assert_eq!(p.switched, None);
            assert_eq!(p.home, g.session_order(key.as_bytes())[0]);
        }
    }

    #[test]
    fn down_or_tried_moves_to_the_next_in_order() {
        let g = group(&["a", "b", "c"], &["", "", ""]);
        let now = Instant::now();
        let key = b"some-session";
        let order = g.session_order(key);
        // Tried (failed this request): the second choice.
        let p = g.pick_for_session(key, true, &order[..1], now).unwrap();
        assert_eq!(
            (p.index, p.home, p.switched),
            (order[1], order[0], Some(SwitchReason::Down))
        );
        down(&g, order[0]);
        let p = g.pick_for_session(key, true, &[], now).unwrap();
        assert_eq!((p.index, p.switched), (order[1], Some(SwitchReason::Down)));
        down(&g, order[1]);
        let p = g.pick_for_session(key, true, &[], now).unwrap();
        assert_eq!(p.index, order[2]);
        down(&g, order[2]);
        assert_eq!(g.pick_for_session(key, true, &[], now), None);
    }

    #[test]
    fn draining_keeps_existing_sessions_only() {
        let g = group(&["a", "b"], &["drain = true", ""]);
        let now = Instant::now();
        let key = (0..100)
            .map(|k| format!("k{k}"))
            .find(|k| g.session_order(k.as_bytes())[0] == 0)
            .unwrap();
        let p = g.pick_for_session(key.as_bytes(), true, &[], now).unwrap();
        assert_eq!((p.index, p.switched), (0, None));
        let p = g.pick_for_session(key.as_bytes(), false, &[], now).unwrap();
        assert_eq!((p.index, p.switched), (1, Some(SwitchReason::Draining)));
    }

    #[test]
    fn an_operator_drain_moves_existing_sessions_too() {
        let g = group(&["a", "b"], &["", ""]);
        let now = Instant::now();
        let key = (0..100)
            .map(|k| format!("k{k}"))
            .find(|k| g.session_order(k.as_bytes())[0] == 0)
            .unwrap();
        g.nodes[0]
            .operator
            .set_state(crate::cluster::operator::OperatorState::Drain);
        let p = g.pick_for_session(key.as_bytes(), true, &[], now).unwrap();
        assert_eq!((p.index, p.switched), (1, Some(SwitchReason::Draining)));
    }

    #[test]
    fn backups_only_when_no_other_node_is_usable() {
        let g = group(&["a", "b"], &["", "backup = true"]);
        let now = Instant::now();
        for k in 0..20 {
            let key = format!("k{k}");
            assert_eq!(g.session_order(key.as_bytes()), vec![0, 1]);
        }
        down(&g, 0);
        let p = g.pick_for_session(b"x", true, &[], now).unwrap();
        assert_eq!((p.index, p.home), (1, 0));
    }

    #[test]
    fn insert_ids_name_nodes() {
        let g = group(&["a", "b"], &["", ""]);
        assert_eq!(g.node_by_id(&g.node_id(1)), Some(1));
        assert_eq!(g.node_by_id("0123456789abcdef"), None);
        assert_eq!(g.node_by_id("bogus"), None);
        assert_eq!(g.node_id(0), crate::balance::affinity::node_id("web", "a"));
        let now = Instant::now();
        assert!(g.node_available(0, &[], now));
        assert!(!g.node_available(0, &[0], now));
        assert!(g.any_available(&[0], now));
        assert!(!g.any_available(&[0, 1], now));
    }
}
