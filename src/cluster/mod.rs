//! The live cluster model: groups, nodes and their live state, behind one
//! atomic pointer.
//!
//! Data flows one way: the config becomes a `ClusterState`; the scraper and
//! the proxy write live state into its nodes; the proxy reads it to pick a
//! node; the admin side renders `snapshot()`. A reload builds a new state
//! from the new config and swaps it in with `apply`, carrying over the live
//! state of every node that stays (same group, name and address). Node
//! host names and SRV groups are resolved by `crate::discovery`: the state
//! runs the config expanded with their last answers, and a changed answer
//! swaps in a new state the same way (`rediscovered`).

pub mod affinity;
pub mod group;
pub mod lend;
pub mod limit;
pub mod node;
pub mod operator;
pub mod queue;
pub mod recent;
pub mod router;
pub mod snapshot;
pub mod stats;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::clock;
use crate::config::Config;
use crate::proxy::guard::StatusGuard;
use group::Group;
use node::{Node, NodeLive};
use router::Router;
use snapshot::{ClusterSnapshot, ConfigInfo, GroupSnapshot, NodeState, Totals, VisitorsSnapshot};
use std::sync::atomic::Ordering::Relaxed;

/// One configuration generation, ready to serve.
#[derive(Debug)]
pub struct ClusterState {
    pub config: Arc<Config>,
    pub groups: Vec<Group>,
    pub router: Router,
    pub guard: StatusGuard,
    /// Unix time this state was built.
    pub loaded_unix: f64,
}

impl ClusterState {
    fn build(config: Config, previous: Option<&ClusterState>) -> ClusterState {
        let mut kept: HashMap<(&str, &str), &Node> = HashMap::new();
        if let Some(prev) = previous {
            for g in &prev.groups {
                for n in &g.nodes {
                    kept.insert((g.name(), n.config.name.as_str()), n);
                }
            }
        }
        let groups: Vec<Group> = config
            .groups
            .iter()
            .map(|gc| {
                let nodes = gc
                    .nodes
                    .iter()
                    .map(|nc| {
                        let live = match kept.get(&(gc.name.as_str(), nc.name.as_str())) {
                            Some(old) if old.config.address == nc.address => Arc::clone(&old.live),
                            _ => Arc::new(NodeLive::new(previous.is_some())),
                        };
                        let operator = kept
                            .get(&(gc.name.as_str(), nc.name.as_str()))
                            .map_or_else(Default::default, |old| Arc::clone(&old.operator));
                        Node {
                            config: nc.clone(),
                            live,
                            operator,
                        }
                    })
                    .collect();
                let old = previous.and_then(|p| p.groups.iter().find(|g| g.name() == gc.name));
                let stats = old.map_or_else(Default::default, |g| Arc::clone(&g.stats));
                let mut group = Group::new(gc.clone(), nodes, stats);
                // The queue goes on with the group: requests waiting in it
                // are served by the new state's nodes' slots as they free.
                if let Some(old) = old {
                    group.queue = Arc::clone(&old.queue);
                }
                for n in &group.nodes {
                    n.live.set_queue(&group.queue);
                }
                group
            })
            .collect();
        let index = |name: &str| groups.iter().position(|g| g.name() == name);
        let default = index(&config.default_group).unwrap_or(0);
        let router = Router::new(&config.routes, default, index);
        let guard = StatusGuard::new(&config.protected_paths);
        ClusterState {
            config: Arc::new(config),
            groups,
            router,
            guard,
            loaded_unix: unix_now(),
        }
    }
}

/// A group's queue as the page and the JSON show it.
fn queue_snapshot(g: &Group, config: &Config) -> snapshot::QueueSnapshot {
    let f = g.queue.figures();
    snapshot::QueueSnapshot {
        length: f.length,
        max_length: f.max_length,
        timeout_seconds: g
            .config
            .queue_timeout
            .unwrap_or(config.timeouts.connect)
            .as_secs_f64(),
        max_queue: g.config.max_queue,
        queued_total: f.queued_total,
        timeouts_total: f.timeouts_total,
        refused_total: f.refused_total,
        abandoned_total: f.abandoned_total,
        wait_p50_seconds: f.wait_p50.map(|d| d.as_secs_f64()),
        wait_p99_seconds: f.wait_p99.map(|d| d.as_secs_f64()),
    }
}

/// What a reload changed, for the log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadDiff {
    pub groups_added: Vec<String>,
    pub groups_removed: Vec<String>,
    pub nodes_added: Vec<String>,
    pub nodes_removed: Vec<String>,
    /// `group/node: what` for nodes that stay with changed settings.
    pub nodes_changed: Vec<String>,
    pub other_changes: bool,
}

impl ReloadDiff {
    pub fn is_empty(&self) -> bool {
        *self == ReloadDiff::default()
    }

    fn between(old: &Config, new: &Config) -> ReloadDiff {
        let mut d = ReloadDiff::default();
        for g in &new.groups {
            match old.group(&g.name) {
                None => {
                    d.groups_added.push(g.name.clone());
                    d.nodes_added
                        .extend(g.nodes.iter().map(|n| format!("{}/{}", g.name, n.name)));
                }
                Some(og) => {
                    for n in &g.nodes {
                        let id = format!("{}/{}", g.name, n.name);
                        match og.nodes.iter().find(|o| o.name == n.name) {
                            None => d.nodes_added.push(id),
                            Some(o) if o.address != n.address => {
                                d.nodes_removed.push(format!("{id} ({})", o.address));
                                d.nodes_added.push(format!("{id} ({})", n.address));
                            }
                            Some(o) => {
                                let mut what = Vec::new();
                                if o.weight != n.weight {
                                    what.push(format!("weight {} -> {}", o.weight, n.weight));
                                }
                                if o.backup != n.backup {
                                    what.push(format!("backup {} -> {}", o.backup, n.backup));
                                }
                                if o.drain != n.drain {
                                    what.push(format!("drain {} -> {}", o.drain, n.drain));
                                }
                                if o != n && what.is_empty() {
                                    what.push("settings".to_string());
                                }
                                if !what.is_empty() {
                                    d.nodes_changed.push(format!("{id}: {}", what.join(", ")));
                                }
                            }
                        }
                    }
                    for o in &og.nodes {
                        if !g.nodes.iter().any(|n| n.name == o.name) {
                            d.nodes_removed.push(format!("{}/{}", g.name, o.name));
                        }
                    }
                    let strip = |g: &crate::config::GroupConfig| crate::config::GroupConfig {
                        nodes: Vec::new(),
                        ..g.clone()
                    };
                    if strip(og) != strip(g) {
                        d.other_changes = true;
                    }
                }
            }
        }
        for og in &old.groups {
            if new.group(&og.name).is_none() {
                d.groups_removed.push(og.name.clone());
                d.nodes_removed
                    .extend(og.nodes.iter().map(|n| format!("{}/{}", og.name, n.name)));
            }
        }
        let without_groups = |c: &Config| Config {
            groups: Vec::new(),
            hash: String::new(),
            ..c.clone()
        };
        if without_groups(old) != without_groups(new) {
            d.other_changes = true;
        }
        d
    }
}

impl fmt::Display for ReloadDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut parts = Vec::new();
        let mut list = |label: &str, items: &[String]| {
            if !items.is_empty() {
                parts.push(format!("{label}: {}", items.join(", ")));
            }
        };
        list("groups added", &self.groups_added);
        list("groups removed", &self.groups_removed);
        list("nodes added", &self.nodes_added);
        list("nodes removed", &self.nodes_removed);
        list("nodes changed", &self.nodes_changed);
        if self.other_changes {
            parts.push("other settings changed".to_string());
        }
        f.write_str(&parts.join("; "))
    }
}

#[derive(Debug, Default)]
struct ReloadStats {
    ok: u64,
    failed: u64,
    last_error: Option<String>,
}

/// The cluster behind one atomic pointer.
#[derive(Debug)]
pub struct Cluster {
    state: ArcSwap<ClusterState>,
    started: Instant,
    reloads: Mutex<ReloadStats>,
    /// What nodes removed by reloads had accumulated (requests, bytes; see
    /// `stats::NodeStats::accumulated`): the cluster's totals keep it.
    retired: Mutex<(u64, u64)>,
    /// The config as read and the DNS answers that expand it.
    pub dns: crate::discovery::Book,
    /// Set once a graceful stop or upgrade began (`/ready` says so).
    stopping: std::sync::atomic::AtomicBool,
    /// Visitor connections by protocol, as the proxy counts them.
    pub visitors: Visitors,
    /// Counts the reloads applied; HTTP/2 connections watch it to send
    /// GOAWAY, as nginx's and HAProxy's old processes do on a reload.
    reloaded: tokio::sync::watch::Sender<u64>,
}

/// Visitor connections the proxy holds now (HTTP/2: connections and the
/// streams being served), for the status page, its JSON and the metrics.
#[derive(Debug, Default)]
pub struct Visitors {
    pub http2_connections: std::sync::atomic::AtomicU64,
    pub http2_streams: std::sync::atomic::AtomicU64,
}

impl Cluster {
    pub fn new(config: Config) -> Cluster {
        let dns = crate::discovery::Book::new(config);
        Cluster {
            state: ArcSwap::from_pointee(ClusterState::build(dns.expanded(), None)),
            started: clock::now(),
            reloads: Mutex::new(ReloadStats::default()),
            retired: Mutex::new((0, 0)),
            dns,
            stopping: Default::default(),
            visitors: Visitors::default(),
            reloaded: tokio::sync::watch::Sender::new(0),
        }
    }

    /// For each node where this proxy keeps more idle connections than its
    /// limit leaves room for (`limit::idle_over`: a scrape showed others
    /// took workers), its address and how many are over.
    pub fn idle_over_limit(&self, now: Instant) -> Vec<(std::net::SocketAddr, u64)> {
        let state = self.state();
        let mut out = Vec::new();
        for g in &state.groups {
            for n in &g.nodes {
                let h = n.live.holding(&g.config, &n.config, now);
                let over = limit::idle_over(h.limit, h.inflight, h.idle);
                if over > 0 {
                    out.push((n.config.address, over));
                }
            }
        }
        out
    }

    /// Changes each time a reload is applied (not on DNS re-resolutions).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// A graceful stop or binary upgrade began: not ready any more.
    pub fn set_stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current state. Cheap; hold it for the length of one request.
    pub fn state(&self) -> Arc<ClusterState> {
        self.state.load_full()
    }

    /// Swap in a new configuration, keeping the live state of nodes that
    /// stay. Requests in flight finish on the state they started with.
    pub fn apply(&self, config: Config) -> ReloadDiff {
        // Swap and count under the lock `snapshot` reads both under, so a
        // snapshot never shows the new count with the old state (and two
        // applies cannot interleave).
        let mut r = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.state.load_full();
        let config = self.dns.set_base(config);
        let diff = ReloadDiff::between(&old.config, &config);
        let new = ClusterState::build(config, Some(&old));
        {
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            for gone in old.groups.iter().flat_map(|g| &g.nodes).filter(|o| {
                !new.groups
                    .iter()
                    .flat_map(|g| &g.nodes)
                    .any(|n| Arc::ptr_eq(&n.live, &o.live))
            }) {
                let (accesses, bytes) = gone.live.stats.accumulated();
                retired.0 += accesses;
                retired.1 += bytes;
            }
        }
        self.state.store(Arc::new(new));
        r.ok += 1;
        r.last_error = None;
        self.reloaded.send_modify(|n| *n += 1);
        diff
    }

    /// Swap in the config expanded with new DNS answers, if that changes
    /// the nodes; not a reload (not counted, `loaded_unix` kept). Nodes
    /// that stay keep their live state as in `apply`.
    pub fn rediscovered(&self) -> Option<ReloadDiff> {
        let _r = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.state.load_full();
        let config = self.dns.expanded();
        if config.groups == old.config.groups {
            return None;
        }
        let diff = ReloadDiff::between(&old.config, &config);
        let mut new = ClusterState::build(config, Some(&old));
        new.loaded_unix = old.loaded_unix;
        self.state.store(Arc::new(new));
        Some(diff)
    }

    /// Count a reload that was refused (the old config keeps serving).
    pub fn reload_failed(&self, error: String) {
        let mut r = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        r.failed += 1;
        r.last_error = Some(error);
    }

    /// (successful, failed) reloads since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        let r = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        (r.ok, r.failed)
    }

    pub fn uptime(&self) -> std::time::Duration {
        clock::since(self.started)
    }

    /// Everything the admin side shows, as plain data.
    pub fn snapshot(&self) -> ClusterSnapshot {
        // The state and the reload counters that go with it, read together.
        let (state, reloads) = {
            let r = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
            (self.state(), (r.ok, r.failed, r.last_error.clone()))
        };
        let now = clock::now();
        let groups: Vec<GroupSnapshot> = state
            .groups
            .iter()
            .map(|g| {
                let recent: u64 = g.nodes.iter().map(|n| n.live.recent_requests()).sum();
                let nodes: Vec<_> = g
                    .nodes
                    .iter()
                    .map(|n| {
                        let mut s = n.live.snapshot(&g.config, &n.config, recent, now);
                        n.show_operator(&mut s);
                        s
                    })
                    .collect();
                let mut totals = Totals::default();
                for n in &nodes {
                    add_node(&mut totals, n);
                }
                GroupSnapshot {
                    name: g.name().to_string(),
                    balance: g.config.balance.name().to_string(),
                    totals,
                    nodes,
                    affinity: affinity::affinity_snapshot(g),
                    content_sync: affinity::content_sync_snapshot(g, &state.config),
                    queue: queue_snapshot(g, &state.config),
                }
            })
            .collect();
        let mut totals = Totals::default();
        {
            let retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            totals.accesses_accumulated_total = retired.0;
            totals.bytes_accumulated_total = retired.1;
        }
        for g in &groups {
            for n in &g.nodes {
                add_node(&mut totals, n);
            }
        }
        let (reloads_ok, reloads_failed, last_reload_error) = reloads;
        ClusterSnapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            time_unix: unix_now(),
            uptime_seconds: clock::since(self.started).as_secs_f64(),
            config: ConfigInfo {
                path: state.config.source.display().to_string(),
                hash: state.config.hash.clone(),
                loaded_unix: state.loaded_unix,
                reloads_ok,
                reloads_failed,
                last_reload_error,
            },
            totals,
            groups,
            visitors: VisitorsSnapshot {
                http2_connections: self.visitors.http2_connections.load(Relaxed),
                http2_streams: self.visitors.http2_streams.load(Relaxed),
            },
            dns: self.dns.status(),
            tls: snapshot::TlsListenerSnapshot::of(&state.config, crate::reload::unix_now()),
        }
    }
}

/// Add a node to totals: counts always, load figures only from nodes whose
/// status is fresh (up or draining).
fn add_node(t: &mut Totals, n: &snapshot::NodeSnapshot) {
    t.nodes += 1;
    t.inflight += n.inflight;
    t.proxied_total += n.proxied_total;
    t.accesses_accumulated_total += n.stats.accesses_accumulated_total;
    t.bytes_accumulated_total += n.stats.bytes_accumulated_total;
    let fresh = matches!(
        n.state,
        NodeState::Up | NodeState::Full | NodeState::Draining
    );
    if matches!(n.state, NodeState::Up | NodeState::Full) {
        t.nodes_up += 1;
    }
    if !fresh {
        return;
    }
    t.busy_workers += u64::from(n.busy_workers.unwrap_or(0));
    t.idle_workers += u64::from(n.idle_workers.unwrap_or(0));
    t.capacity += u64::from(n.capacity.unwrap_or(0));
    t.node_accesses_total += n.node_accesses_total.unwrap_or(0);
    t.node_bytes_total += n.node_bytes_total.unwrap_or(0);
    t.requests_per_second += n.requests_per_second.unwrap_or(0.0);
    t.bytes_per_second += n.bytes_per_second.unwrap_or(0.0);
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(nodes: usize) -> Config {
        let mut text = "[[group]]\nname = \"web\"\n".to_string();
        for i in 0..nodes {
            text.push_str(&format!(
                "[[group.node]]\nname = \"n{i}\"\naddress = \"127.0.0.1:{}\"\n",
                9000 + i
            ));
        }
        crate::config::parse(&text, Path::new("t.toml")).expect("valid")
    }

    #[test]
    fn snapshot_counts_match_the_state_they_describe() {
        // Odd reload counts have 2 nodes, even ones 1: a snapshot taken while
        // reloads run must never mix the two.
        let cluster = Arc::new(Cluster::new(config(1)));
        let writer = {
            let cluster = Arc::clone(&cluster);
            std::thread::spawn(move || {
                for i in 1..=400 {
                    cluster.apply(config(if i % 2 == 1 { 2 } else { 1 }));
                }
            })
        };
        let mut seen = 0;
        while !writer.is_finished() || seen == 0 {
            let s = cluster.snapshot();
            let expected = if s.config.reloads_ok % 2 == 1 { 2 } else { 1 };
            assert_eq!(
                s.groups[0].nodes.len(),
                expected,
                "after {} reloads",
                s.config.reloads_ok
            );
            seen += 1;
        }
        writer.join().expect("writer");
        assert_eq!(cluster.reload_counts(), (400, 0));
    }
}
