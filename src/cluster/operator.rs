//! Runtime control of nodes by an operator (issue #18): a state on top of
//! the config (`ready`, `drain`, `maint`) and a weight that overrides the
//! configured one, set through the admin API (`admin::api`) or the
//! `webcluster node` command, like HAProxy's `set server ... state|weight`.
//!
//! - `drain`: no new requests nor new sessions, like the config's
//!   `drain = true`; requests in flight finish, existing sessions keep the
//!   node (HAProxy's DRAIN).
//! - `maint`: no request at all, not even a session's own; health checks go
//!   on (HAProxy's MAINT).
//! - `ready`: back to what the config says.
//! - weight `0..=10000`, or none to go back to the config's.
//!
//! Each node's [`Operator`] is carried over a reload by group and node name
//! (even when the address changes); a node a reload removes loses it. With
//! `[server] state_file` every change is written to that file (temp file,
//! then rename) and read back at start for the nodes that still exist.

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cluster::node::Node;
use crate::cluster::snapshot::{NodeSnapshot, NodeState};
use crate::cluster::Cluster;

/// Highest weight an operator may set (HAProxy's limit is 256; the config's
/// is the same as this).
pub const MAX_WEIGHT: u32 = 10_000;

/// What the operator said of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorState {
    /// As the config says.
    #[default]
    Ready,
    /// No new requests or sessions; in-flight ones finish.
    Drain,
    /// No requests at all.
    Maint,
}

impl OperatorState {
    pub const ALL: [OperatorState; 3] = [
        OperatorState::Ready,
        OperatorState::Drain,
        OperatorState::Maint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperatorState::Ready => "ready",
            OperatorState::Drain => "drain",
            OperatorState::Maint => "maint",
        }
    }

    pub fn parse(word: &str) -> Option<OperatorState> {
        Self::ALL.into_iter().find(|s| s.as_str() == word)
    }

    fn from_u8(v: u8) -> OperatorState {
        match v {
            1 => OperatorState::Drain,
            2 => OperatorState::Maint,
            _ => OperatorState::Ready,
        }
    }
}

/// No weight override.
const NO_WEIGHT: u32 = u32::MAX;

/// A node's operator state, shared by every config generation the node is
/// in; read on every pick, so atomics only.
#[derive(Debug)]
pub struct Operator {
    state: AtomicU8,
    weight: AtomicU32,
}

impl Default for Operator {
    fn default() -> Operator {
        Operator {
            state: AtomicU8::new(OperatorState::Ready as u8),
            weight: AtomicU32::new(NO_WEIGHT),
        }
    }
}

impl Operator {
    pub fn state(&self) -> OperatorState {
        OperatorState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// The weight set by the operator, if any.
    pub fn weight(&self) -> Option<u32> {
        Some(self.weight.load(Ordering::Relaxed)).filter(|&w| w != NO_WEIGHT)
    }

    pub(crate) fn set_state(&self, s: OperatorState) -> OperatorState {
        OperatorState::from_u8(self.state.swap(s as u8, Ordering::Relaxed))
    }

    fn set_weight(&self, w: Option<u32>) -> Option<u32> {
        Some(self.weight.swap(w.unwrap_or(NO_WEIGHT), Ordering::Relaxed))
            .filter(|&w| w != NO_WEIGHT)
    }

    fn is_default(&self) -> bool {
        self.state() == OperatorState::Ready && self.weight().is_none()
    }
}

impl Node {
    /// No new requests or sessions: drained by the config or the operator,
    /// or in maintenance.
    pub fn draining(&self) -> bool {
        self.config.drain || self.operator.state() != OperatorState::Ready
    }

    /// Drained by the operator: besides no new requests, the sessions on
    /// it move to other nodes (a drain for a deploy), where the config's
    /// `drain = true` lets them stay until they end.
    pub fn operator_drained(&self) -> bool {
        self.operator.state() == OperatorState::Drain
    }

    /// Taken out by the operator: no request at all.
    pub fn in_maint(&self) -> bool {
        self.operator.state() == OperatorState::Maint
    }

    /// The weight the balancer uses: the operator's, else the config's.
    pub fn weight(&self) -> u32 {
        self.operator.weight().unwrap_or(self.config.weight)
    }

    /// Whether the node may get a request now (a session's own included):
    /// not in maintenance and healthy.
    pub fn usable(&self, now: Instant) -> bool {
        !self.in_maint() && self.live.usable(now)
    }

    /// Show the operator state in the node's snapshot: its fields, and the
    /// state and weight it makes.
    pub(super) fn show_operator(&self, s: &mut NodeSnapshot) {
        let state = self.operator.state();
        s.operator_state = state;
        s.operator_weight = self.operator.weight();
        if let Some(w) = s.operator_weight {
            let ramp = if self.config.weight > 0 {
                s.effective_weight / f64::from(self.config.weight)
            } else {
                1.0
            };
            s.effective_weight = f64::from(w) * ramp;
        }
        match state {
            OperatorState::Ready => {}
            OperatorState::Drain => s.state = NodeState::Draining,
            OperatorState::Maint => {
                s.state = NodeState::Down;
                s.down_reason = Some("in maintenance (set by the operator)".to_owned());
            }
        }
    }
}

/// A change an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    State(OperatorState),
    /// A weight, or None to go back to the config's.
    Weight(Option<u32>),
}

/// One node's operator state as the API answers it and the state file
/// keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeControl {
    pub group: String,
    pub node: String,
    pub state: OperatorState,
    /// The operator's weight, if set.
    #[serde(default)]
    pub weight: Option<u32>,
    /// The config's weight (not in the state file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_weight: Option<u32>,
    /// `drain = true` in the config (not in the state file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_drain: Option<bool>,
}

/// Why a change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    UnknownNode(String),
    BadValue(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::UnknownNode(m) | ControlError::BadValue(m) => f.write_str(m),
        }
    }
}

fn control_of(group: &str, n: &Node) -> NodeControl {
    NodeControl {
        group: group.to_owned(),
        node: n.config.name.clone(),
        state: n.operator.state(),
        weight: n.operator.weight(),
        config_weight: Some(n.config.weight),
        config_drain: Some(n.config.drain),
    }
}

/// Serialises writes of the state file, so the last change is the last
/// written.
static STATE_FILE: Mutex<()> = Mutex::new(());

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    nodes: Vec<NodeControl>,
}

impl Cluster {
    /// Every node's operator state, in config order.
    pub fn node_controls(&self) -> Vec<NodeControl> {
        let state = self.state();
        state
            .groups
            .iter()
            .flat_map(|g| g.nodes.iter().map(|n| control_of(g.name(), n)))
            .collect()
    }

    /// One node's operator state.
    pub fn node_control(&self, group: &str, node: &str) -> Result<NodeControl, ControlError> {
        let state = self.state();
        find(&state, group, node).map(|n| control_of(group, n))
    }

    /// Make `change` to node `group/node`, say so in the log (`by` says
    /// who) and write the state file if there is one. Answers the node's
    /// state before and after.
    pub fn control_node(
        &self,
        group: &str,
        node: &str,
        change: Change,
        by: &str,
    ) -> Result<(NodeControl, NodeControl), ControlError> {
        let state = self.state();
        let n = find(&state, group, node)?;
        if let Change::Weight(Some(w)) = change {
            if w > MAX_WEIGHT {
                return Err(ControlError::BadValue(format!(
                    "weight {w} is out of range: 0 to {MAX_WEIGHT}"
                )));
            }
        }
        let before = control_of(group, n);
        match change {
            Change::State(s) => {
                let was = n.operator.set_state(s);
                tracing::info!(
                    group,
                    node,
                    "node {group}/{node} set to {} by {by} (was {})",
                    s.as_str(),
                    was.as_str()
                );
            }
            Change::Weight(w) => {
                let was = n.operator.set_weight(w);
                let word = |w: Option<u32>| {
                    w.map_or(format!("the config's {}", n.config.weight), |w| {
                        w.to_string()
                    })
                };
                tracing::info!(
                    group,
                    node,
                    "node {group}/{node} weight set to {} by {by} (was {})",
                    word(w),
                    word(was)
                );
            }
        }
        let after = control_of(group, n);
        if let Some(path) = &state.config.server.state_file {
            if let Err(e) = self.save_controls(path) {
                tracing::warn!(
                    "cannot write the state file {}: {e:#}; the change is made but will not outlive a restart",
                    path.display()
                );
            }
        }
        Ok((before, after))
    }

    /// Write every node's operator state that is not the default to `path`
    /// (a temp file beside it, then renamed over it).
    pub fn save_controls(&self, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let _one_at_a_time = STATE_FILE.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.state();
        let nodes = state
            .groups
            .iter()
            .flat_map(|g| {
                g.nodes
                    .iter()
                    .filter(|n| !n.operator.is_default())
                    .map(|n| NodeControl {
                        config_weight: None,
                        config_drain: None,
                        ..control_of(g.name(), n)
                    })
            })
            .collect();
        let mut text = serde_json::to_vec_pretty(&StateFile { version: 1, nodes })?;
        text.push(b'\n');
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| {
            let _ = std::fs::remove_file(&tmp);
            format!("renaming {} to {}", tmp.display(), path.display())
        })
    }

    /// At start: the operator states saved in `[server] state_file`, for the
    /// nodes that still exist. A missing file is no error; an unreadable or
    /// garbled one is logged and ignored.
    pub fn restore_controls(&self) {
        let state = self.state();
        let Some(path) = state.config.server.state_file.as_deref() else {
            return;
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(
                    "cannot read the state file {}: {e}; ignored",
                    path.display()
                );
                return;
            }
        };
        let file: StateFile = match serde_json::from_slice(&text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(
                    "the state file {} is not a webcluster state file ({e}); ignored",
                    path.display()
                );
                return;
            }
        };
        for saved in file.nodes {
            let (g, n) = (saved.group.as_str(), saved.node.as_str());
            let Ok(node) = find(&state, g, n) else {
                tracing::info!(
                    "state file: node {g}/{n} is no longer in the config; its saved state ({}) is dropped",
                    saved.state.as_str()
                );
                continue;
            };
            let weight = saved.weight.filter(|&w| w <= MAX_WEIGHT);
            node.operator.set_state(saved.state);
            node.operator.set_weight(weight);
            if !node.operator.is_default() {
                let w = weight.map_or(String::new(), |w| format!(", weight {w}"));
                tracing::info!(
                    group = g,
                    node = n,
                    "node {g}/{n} set to {}{w} from the state file {}",
                    saved.state.as_str(),
                    path.display()
                );
            }
        }
    }
}

fn find<'a>(
    state: &'a super::ClusterState,
    group: &str,
    node: &str,
) -> Result<&'a Node, ControlError> {
    let g = state
        .groups
        .iter()
        .find(|g| g.name() == group)
        .ok_or_else(|| ControlError::UnknownNode(format!("no group named {group:?}")))?;
    g.nodes
        .iter()
        .find(|n| n.config.name == node)
        .ok_or_else(|| {
            ControlError::UnknownNode(format!("group {group:?} has no node named {node:?}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(extra: &str) -> Cluster {
        let text = format!(
            "[server]\n{extra}\n[[group]]\nname = \"web\"\n[[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:8001\"\n[[group.node]]\nname = \"b\"\naddress = \"127.0.0.1:8002\"\nweight = 3\n"
        );
        Cluster::new(crate::config::parse(&text, Path::new("t.toml")).expect("valid"))
    }

    #[test]
    fn changes_show_and_bad_ones_are_refused() {
        let c = cluster("");
        let (before, after) = c
            .control_node("web", "b", Change::State(OperatorState::Drain), "test")
            .expect("known node");
        assert_eq!(before.state, OperatorState::Ready);
        assert_eq!(after.state, OperatorState::Drain);
        c.control_node("web", "a", Change::Weight(Some(7)), "test")
            .expect("in range");
        assert!(matches!(
            c.control_node("web", "a", Change::Weight(Some(MAX_WEIGHT + 1)), "test"),
            Err(ControlError::BadValue(_))
        ));
        assert!(matches!(
            c.control_node("web", "zz", Change::State(OperatorState::Maint), "test"),
            Err(ControlError::UnknownNode(_))
        ));
        let s = c.snapshot();
        let nodes = &s.groups[0].nodes;
        assert_eq!(nodes[0].operator_weight, Some(7));
        assert_eq!(nodes[0].effective_weight, 7.0);
        assert_eq!(nodes[1].state, NodeState::Draining);
        assert_eq!(nodes[1].operator_state, OperatorState::Drain);
        // only a is a candidate now
        let st = c.state();
        assert_eq!(st.groups[0].pick(&[], Instant::now()), Some(0));
        c.control_node("web", "a", Change::State(OperatorState::Maint), "test")
            .expect("known node");
        assert_eq!(st.groups[0].pick(&[], Instant::now()), None);
        assert!(!st.groups[0].nodes[0].usable(Instant::now()));
    }

    #[test]
    fn kept_over_a_reload_by_name_and_lost_with_the_node() {
        let c = cluster("");
        c.control_node("web", "b", Change::State(OperatorState::Maint), "test")
            .expect("known");
        c.control_node("web", "a", Change::Weight(Some(0)), "test")
            .expect("known");
        // b moves to another address; a is removed
        let text = "[[group]]\nname = \"web\"\n[[group.node]]\nname = \"b\"\naddress = \"127.0.0.1:9002\"\n";
        c.apply(crate::config::parse(text, Path::new("t.toml")).expect("valid"));
        let b = c.node_control("web", "b").expect("b stays");
        assert_eq!(b.state, OperatorState::Maint);
        let text = "[[group]]\nname = \"web\"\n[[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:8001\"\n[[group.node]]\nname = \"b\"\naddress = \"127.0.0.1:9002\"\n";
        c.apply(crate::config::parse(text, Path::new("t.toml")).expect("valid"));
        assert_eq!(c.node_control("web", "a").expect("back").weight, None);
    }

    #[test]
    fn the_state_file_round_trips_and_a_garbled_one_is_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.json");
        let extra = format!("state_file = {:?}", path.display().to_string());
        let c = cluster(&extra);
        c.control_node("web", "a", Change::State(OperatorState::Drain), "test")
            .expect("known");
        c.control_node("web", "b", Change::Weight(Some(42)), "test")
            .expect("known");
        let again = cluster(&extra);
        again.restore_controls();
        assert_eq!(again.node_controls(), c.node_controls());
        std::fs::write(&path, b"{not json").expect("write");
        let fresh = cluster(&extra);
        fresh.restore_controls();
        assert!(fresh
            .node_controls()
            .iter()
            .all(|n| n.state == OperatorState::Ready && n.weight.is_none()));
        std::fs::remove_file(&path).expect("remove");
        fresh.restore_controls();
    }
}
