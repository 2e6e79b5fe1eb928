//! Nodes from DNS: node addresses written as host names, re-resolved as
//! their TTL says, and groups that take nodes from a DNS SRV name.
//!
//! The config as read (the *base*) keeps the names; the config the cluster
//! runs is the base *expanded* with the last good answer to each name
//! (`Book::expanded`). `Cluster::apply` (a reload) stores a new base and
//! runs its expansion; the resolver service (`service.rs`) asks each name
//! again when its answer expires and, when an answer changed the expansion,
//! swaps it in with `Cluster::rediscovered`, which keeps the live state of
//! the nodes that stay just as a reload does: a node that appears starts in
//! slow start, one that disappears finishes its requests in flight on the
//! state they started with, and its sessions move to the next node of their
//! rendezvous order.
//!
//! A failed lookup (time-out, SERVFAIL, no server, and an empty answer or
//! NXDOMAIN too, so that DNS alone never empties a group) keeps the last
//! good answer; the error is shown on the status page and in
//! `webcluster_dns_resolutions_total{group,result}`.

pub mod service;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::file::MAX_WEIGHT;
use crate::config::{Config, Discovery, NodeConfig, SrvNodes, StatusUrl};

/// One name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Query {
    /// A node's host name (A and AAAA).
    Host(String),
    /// A group's SRV name.
    Srv(String),
}

impl Query {
    pub fn name(&self) -> &str {
        match self {
            Query::Host(n) | Query::Srv(n) => n,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Query::Host(_) => "address",
            Query::Srv(_) => "srv",
        }
    }
}

/// One target of an SRV answer, with the address it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SrvTarget {
    pub priority: u16,
    pub target: String,
    pub port: u16,
    pub weight: u16,
    pub ip: IpAddr,
}

/// A good answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Records {
    /// Sorted, not empty.
    Ips(Vec<IpAddr>),
    /// Sorted, not empty.
    Srv(Vec<SrvTarget>),
}

/// What is known of one name.
#[derive(Debug, Clone, Default)]
struct Answer {
    /// The last good answer, kept through failures.
    records: Option<Records>,
    /// When to ask again.
    next: Option<Instant>,
    last_ok_unix: Option<f64>,
    last_try_unix: Option<f64>,
    /// The error of the last lookup, `None` when it succeeded.
    last_error: Option<String>,
    ok: u64,
    failed: u64,
}

/// The resolution state of one name, for the status page and JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsStatus {
    /// The groups whose nodes come from this name.
    pub groups: Vec<String>,
    /// `address` (a node's host name) or `srv` (a group's SRV name).
    pub kind: &'static str,
    pub name: String,
    /// What the last good answer gave: addresses, or `target:port` per SRV
    /// target (`priority/weight` after it).
    pub answer: Vec<String>,
    pub last_ok_unix: Option<f64>,
    pub last_try_unix: Option<f64>,
    /// Why the last lookup failed (`None`: it succeeded, or none was made).
    pub last_error: Option<String>,
    pub resolutions_ok: u64,
    pub resolutions_failed: u64,
}

/// The base config and the answers to its names.
#[derive(Debug)]
pub struct Book {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: Config,
    answers: HashMap<Query, Answer>,
}

/// A name and the groups asking it.
pub type Asked = (Query, Vec<String>);

/// What is due: the discovery settings, the names to ask now, and when the
/// next answer expires.
pub type Due = (Discovery, Vec<Asked>, Option<Instant>);

/// Every name the config asks, with the groups asking it, in file order.
pub fn queries(config: &Config) -> Vec<Asked> {
    let mut out: Vec<Asked> = Vec::new();
    let mut add = |q: Query, group: &str| match out.iter_mut().find(|(o, _)| *o == q) {
        Some((_, groups)) => {
            if !groups.iter().any(|g| g == group) {
                groups.push(group.to_owned());
            }
        }
        None => out.push((q, vec![group.to_owned()])),
    };
    for g in &config.groups {
        for n in &g.nodes {
            if let Some(h) = &n.host {
                add(Query::Host(h.clone()), &g.name);
            }
        }
        if let Some(s) = &g.srv {
            add(Query::Srv(s.name.clone()), &g.name);
        }
    }
    out
}

impl Book {
    pub fn new(base: Config) -> Book {
        Book {
            inner: Mutex::new(Inner {
                base,
                answers: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new base config (a reload): answers to names it still asks are
    /// kept. Returns its expansion.
    pub fn set_base(&self, base: Config) -> Config {
        let mut inner = self.lock();
        let asked: Vec<Query> = queries(&base).into_iter().map(|(q, _)| q).collect();
        inner.answers.retain(|q, _| asked.contains(q));
        inner.base = base;
        expand(&inner.base, &inner.answers)
    }

    /// The base config with the last good answers.
    pub fn expanded(&self) -> Config {
        let inner = self.lock();
        expand(&inner.base, &inner.answers)
    }

    /// The discovery settings, the names whose answer is due at `now`
    /// (never asked, or expired) with their groups, and when the next
    /// answer expires.
    pub fn due(&self, now: Instant) -> Due {
        let inner = self.lock();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (q, groups) in queries(&inner.base) {
            match inner.answers.get(&q).and_then(|a| a.next) {
                Some(t) if t > now => next = Some(next.map_or(t, |n| n.min(t))),
                _ => due.push((q, groups)),
            }
        }
        (inner.base.discovery.clone(), due, next)
    }

    /// Record the outcome of a lookup made at `now`: a good answer valid
    /// until an instant (clamped to the TTL floor and ceiling here), or an
    /// error (the last good answer stays; asked again after the floor).
    /// Returns whether the kept answer changed.
    pub fn record(
        &self,
        query: &Query,
        result: Result<(Records, Instant), String>,
        now: Instant,
        unix: f64,
    ) -> bool {
        let mut inner = self.lock();
        let d = inner.base.discovery.clone();
        let a = inner.answers.entry(query.clone()).or_default();
        a.last_try_unix = Some(unix);
        match result {
            Ok((records, valid_until)) => {
                let ttl = valid_until
                    .saturating_duration_since(now)
                    .clamp(d.min_ttl, d.max_ttl);
                a.next = Some(now + ttl);
                a.last_ok_unix = Some(unix);
                a.last_error = None;
                a.ok += 1;
                let changed = a.records.as_ref() != Some(&records);
                a.records = Some(records);
                changed
            }
            Err(e) => {
                a.next = Some(now + d.min_ttl.max(Duration::from_millis(200)));
                a.last_error = Some(e);
                a.failed += 1;
                false
            }
        }
    }

    /// Every name of the config and what is known of it.
    pub fn status(&self) -> Vec<DnsStatus> {
        let inner = self.lock();
        queries(&inner.base)
            .into_iter()
            .map(|(q, groups)| {
                let a = inner.answers.get(&q).cloned().unwrap_or_default();
                let answer = match &a.records {
                    None => Vec::new(),
                    Some(Records::Ips(ips)) => ips.iter().map(ToString::to_string).collect(),
                    Some(Records::Srv(t)) => t
                        .iter()
                        .map(|t| {
                            format!(
                                "{}:{} ({}, priority {}, weight {})",
                                t.target, t.port, t.ip, t.priority, t.weight
                            )
                        })
                        .collect(),
                };
                DnsStatus {
                    groups,
                    kind: q.kind(),
                    name: q.name().to_owned(),
                    answer,
                    last_ok_unix: a.last_ok_unix,
                    last_try_unix: a.last_try_unix,
                    last_error: a.last_error,
                    resolutions_ok: a.ok,
                    resolutions_failed: a.failed,
                }
            })
            .collect()
    }
}

/// The base config with each host name replaced by its address and each
/// SRV group's targets added as nodes. A node whose name has no answer yet
/// keeps the address resolved when the file was read, or is left out when
/// there is none (`[discovery] nameservers` set: the system resolver was
/// not asked).
fn expand(base: &Config, answers: &HashMap<Query, Answer>) -> Config {
    let mut config = base.clone();
    for g in &mut config.groups {
        let mut nodes: Vec<NodeConfig> = Vec::with_capacity(g.nodes.len());
        for n in g.nodes.drain(..) {
            let Some(host) = &n.host else {
                nodes.push(n);
                continue;
            };
            let ips = match answers.get(&Query::Host(host.clone())) {
                Some(Answer {
                    records: Some(Records::Ips(ips)),
                    ..
                }) => ips.as_slice(),
                _ => &[],
            };
            // The address read at load while it is still in the answer (a
            // name with several addresses does not flap), else the lowest.
            let ip = if ips.contains(&n.address.ip()) {
                Some(n.address.ip())
            } else {
                ips.first().copied()
            };
            match ip {
                Some(ip) => nodes.push(retarget(n, ip)),
                None if !n.address.ip().is_unspecified() => nodes.push(n),
                None => {}
            }
        }
        if let Some(srv) = &g.srv {
            if let Some(Answer {
                records: Some(Records::Srv(targets)),
                ..
            }) = answers.get(&Query::Srv(srv.name.clone()))
            {
                let lowest = targets.iter().map(|t| t.priority).min().unwrap_or(0);
                for t in targets {
                    let twice = targets.iter().filter(|o| o.target == t.target).count() > 1;
                    let name = if twice {
                        format!("{}-{}", t.target, t.port)
                    } else {
                        t.target.clone()
                    };
                    if nodes.iter().any(|n| n.name == name) {
                        continue;
                    }
                    nodes.push(srv_node(name, t, t.priority != lowest, srv));
                }
            }
        }
        g.nodes = nodes;
    }
    config
}

/// A host-name node at `ip`; its status page follows it when it was at the
/// node's own address (the default `status_url`, or one with the same host).
fn retarget(mut n: NodeConfig, ip: IpAddr) -> NodeConfig {
    if n.status.address == n.address {
        n.status.address = SocketAddr::new(ip, n.status.address.port());
    }
    n.address = SocketAddr::new(ip, n.address.port());
    n
}

/// A node from an SRV target: its port and weight (0, "no preference",
/// counts as 1), backup when its priority is not the lowest; its status
/// page at the group's `srv_status_path` of the same address.
fn srv_node(name: String, t: &SrvTarget, backup: bool, srv: &SrvNodes) -> NodeConfig {
    let address = SocketAddr::new(t.ip, t.port);
    let host = format!("{}:{}", t.target, t.port);
    let path = &srv.status_path;
    NodeConfig {
        name,
        address,
        host: None,
        weight: u32::from(t.weight).clamp(1, MAX_WEIGHT),
        backup,
        drain: false,
        status: StatusUrl {
            url: format!("http://{host}{path}"),
            address,
            host,
            path_and_query: path.clone(),
        },
        status_kind: srv.status_kind,
        max_workers: srv.max_workers,
        max_conns: None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[discovery]\nnameservers = [\"127.0.0.1:5353\"]\n\
             [[group]]\nname = \"web\"\nsrv = \"_http._tcp.web.test\"\n{extra}"
        );
        crate::config::parse(&text, Path::new("<test>")).expect("valid")
    }

    fn target(name: &str, port: u16, priority: u16, weight: u16) -> SrvTarget {
        SrvTarget {
            priority,
            target: name.to_owned(),
            port,
            weight,
            ip: IpAddr::from([127, 0, 0, 1]),
        }
    }

    #[test]
    fn a_host_name_node_serves_once_resolved_and_keeps_its_last_answer() {
        let book = Book::new(config(
            "[[group.node]]\nname = \"a\"\naddress = \"a.web.test:8080\"\n",
        ));
        assert!(book.expanded().groups[0].nodes.is_empty());
        let now = Instant::now();
        let (_, due, _) = book.due(now);
        assert_eq!(due.len(), 2);
        let q = Query::Host("a.web.test".to_owned());
        let ip = IpAddr::from([10, 0, 0, 7]);
        assert!(book.record(&q, Ok((Records::Ips(vec![ip]), now)), now, 1.0));
        let nodes = book.expanded().groups[0].nodes.clone();
        assert_eq!(nodes[0].address, SocketAddr::new(ip, 8080));
        assert_eq!(nodes[0].status.address, SocketAddr::new(ip, 8080));
        assert_eq!(nodes[0].status.host, "a.web.test:8080");
        // Asked again after the TTL floor (1 s by default), not at once.
        assert!(book
            .due(now)
            .1
            .iter()
            .all(|(q, _)| matches!(q, Query::Srv(_))));
        assert!(!book.record(&q, Err("timed out".to_owned()), now, 2.0));
        assert_eq!(book.expanded().groups[0].nodes[0].address.ip(), ip);
        let status = book.status();
        assert_eq!(status[0].last_error.as_deref(), Some("timed out"));
        assert_eq!(status[0].answer, ["10.0.0.7"]);
        assert_eq!(
            (status[0].resolutions_ok, status[0].resolutions_failed),
            (1, 1)
        );
    }

    #[test]
    fn srv_targets_become_nodes_with_port_weight_and_backup() {
        let book = Book::new(config(""));
        let now = Instant::now();
        let q = Query::Srv("_http._tcp.web.test".to_owned());
        let targets = vec![
            target("n1.web.test", 8001, 10, 5),
            target("n2.web.test", 8002, 10, 0),
            target("n3.web.test", 8003, 20, 1),
        ];
        assert!(book.record(&q, Ok((Records::Srv(targets), now)), now, 1.0));
        let nodes = book.expanded().groups[0].nodes.clone();
        let view: Vec<_> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.address.port(), n.weight, n.backup))
            .collect();
        assert_eq!(
            view,
            [
                ("n1.web.test", 8001, 5, false),
                ("n2.web.test", 8002, 1, false),
                ("n3.web.test", 8003, 1, true),
            ]
        );
        // A reload that no longer asks the name forgets its answer.
        let plain = crate::config::parse(
            "[[group]]\nname = \"web\"\n[[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n",
            Path::new("<test>"),
        )
        .expect("valid");
        assert_eq!(book.set_base(plain).groups[0].nodes.len(), 1);
        assert!(book.status().is_empty());
    }

    #[test]
    fn srv_nodes_take_the_groups_status_path_kind_and_workers() {
        let plain = Book::new(config(""));
        let custom = Book::new(config(
            "srv_status_path = \"/nginx_status\"\nsrv_status_kind = \"nginx\"\nsrv_max_workers = 64\n",
        ));
        let now = Instant::now();
        let q = Query::Srv("_http._tcp.web.test".to_owned());
        for book in [&plain, &custom] {
            let targets = vec![target("n1.web.test", 8001, 10, 1)];
            assert!(book.record(&q, Ok((Records::Srv(targets), now)), now, 1.0));
        }
        let n = plain.expanded().groups[0].nodes[0].clone();
        assert_eq!(n.status.url, "http://n1.web.test:8001/server-status?auto");
        assert_eq!((n.status_kind.name(), n.max_workers), ("auto", None));
        let n = custom.expanded().groups[0].nodes[0].clone();
        assert_eq!(n.status.url, "http://n1.web.test:8001/nginx_status");
        assert_eq!(n.status.path_and_query, "/nginx_status");
        assert_eq!(n.status.address, n.address);
        assert_eq!((n.status_kind.name(), n.max_workers), ("nginx", Some(64)));
    }

    #[test]
    fn a_group_with_no_answer_yet_has_no_node_then_gains_keeps_and_drops_them() {
        let cluster = crate::cluster::Cluster::new(config(""));
        let now = Instant::now();
        assert_eq!(cluster.state().groups[0].pick(&[], now), None);
        assert_eq!(cluster.snapshot().groups[0].nodes.len(), 0);
        assert!(cluster.rediscovered().is_none());

        let q = Query::Srv("_http._tcp.web.test".to_owned());
        let two = vec![
            target("n1.web.test", 8001, 10, 1),
            target("n2.web.test", 8002, 10, 1),
        ];
        cluster
            .dns
            .record(&q, Ok((Records::Srv(two), now)), now, 1.0);
        let diff = cluster.rediscovered().expect("nodes added");
        assert_eq!(diff.nodes_added, ["web/n1.web.test", "web/n2.web.test"]);
        let state = cluster.state();
        let n1 = std::sync::Arc::clone(&state.groups[0].nodes[0].live);
        assert!(state.groups[0].pick(&[], now).is_some());
        assert_eq!(cluster.reload_counts(), (0, 0));

        // n2 leaves: n1 keeps its live state.
        let one = vec![target("n1.web.test", 8001, 10, 1)];
        cluster
            .dns
            .record(&q, Ok((Records::Srv(one), now)), now, 2.0);
        let diff = cluster.rediscovered().expect("node removed");
        assert_eq!(diff.nodes_removed, ["web/n2.web.test"]);
        let state = cluster.state();
        assert_eq!(state.groups[0].nodes.len(), 1);
        assert!(std::sync::Arc::ptr_eq(&state.groups[0].nodes[0].live, &n1));
    }
}
