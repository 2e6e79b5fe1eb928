//! A point-in-time copy of the live cluster model, as plain data.
//!
//! The admin side renders only this (HTML page, JSON, Apache `?auto`,
//! Prometheus gauges); it never touches the live atomics or picks a node.
//! The JSON served at `/status.json` is exactly this structure serialised,
//! so field names here are a public interface: documented in the README.

use serde::Serialize;

pub use crate::cluster::stats::{HistoryPoint, StatsSnapshot};

/// The whole cluster as the proxy sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSnapshot {
    /// `webcluster` version.
    pub version: String,
    /// Unix time of this snapshot, seconds.
    pub time_unix: f64,
    /// Seconds since this process started.
    pub uptime_seconds: f64,
    /// Config file path, its hash and when it was last (re)loaded.
    pub config: ConfigInfo,
    /// Sums over every node with a fresh status.
    pub totals: Totals,
    pub groups: Vec<GroupSnapshot>,
    /// Visitor connections by protocol.
    pub visitors: VisitorsSnapshot,
    /// Node host names and SRV names being resolved, with their last
    /// answer and error (`crate::discovery`); empty when there are none.
    pub dns: Vec<crate::discovery::DnsStatus>,
    /// The TLS listeners (`[[tls]]`) and their certificates; empty when
    /// there are none.
    pub tls: Vec<TlsListenerSnapshot>,
}

/// A TLS listener as configured now.
#[derive(Debug, Clone, Serialize)]
pub struct TlsListenerSnapshot {
    pub listen: Vec<String>,
    /// `1.2` or `1.3`.
    pub min_version: String,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<String>,
    pub session_tickets: bool,
    pub session_cache: usize,
    /// The first is the listener's default.
    pub certificates: Vec<CertificateSnapshot>,
}

/// A certificate a TLS listener serves.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateSnapshot {
    pub chain_file: String,
    pub key_file: String,
    /// The names it answers for (SNI).
    pub names: Vec<String>,
    pub subject: String,
    pub issuer: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Whole days left until it expires (negative once expired).
    pub expires_in_days: i64,
    /// It expires within two weeks (the log warns too).
    pub expiring_soon: bool,
}

impl TlsListenerSnapshot {
    /// The listeners of `config` at Unix time `now`.
    pub fn of(config: &crate::config::Config, now: i64) -> Vec<TlsListenerSnapshot> {
        config
            .tls
            .iter()
            .map(|t| TlsListenerSnapshot {
                listen: t.listen.iter().map(ToString::to_string).collect(),
                min_version: t.min_version.as_str().to_string(),
                alpn: crate::tls::alpn_protocols(t)
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect(),
                session_tickets: t.session_tickets,
                session_cache: t.session_cache,
                certificates: t
                    .certificates
                    .iter()
                    .map(|c| CertificateSnapshot {
                        chain_file: c.chain_file.display().to_string(),
                        key_file: c.key_file.display().to_string(),
                        names: c.names.clone(),
                        subject: c.subject.clone(),
                        issuer: c.issuer.clone(),
                        not_before_unix: c.not_before,
                        not_after_unix: c.not_after,
                        expires_in_days: (c.not_after - now).div_euclid(86_400),
                        expiring_soon: crate::tls::expiry::expiring_soon(c.not_after, now),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Visitor connections the proxy holds now, by protocol.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VisitorsSnapshot {
    /// HTTP/2 connections open.
    pub http2_connections: u64,
    /// HTTP/2 streams being served (each one request).
    pub http2_streams: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfo {
    pub path: String,
    pub hash: String,
    /// Unix time of the last successful (re)load, seconds.
    pub loaded_unix: f64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The error of the last failed reload, if the last attempt failed.
    pub last_reload_error: Option<String>,
}

/// Cluster or group totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub nodes: u32,
    pub nodes_up: u32,
    pub busy_workers: u64,
    pub idle_workers: u64,
    pub capacity: u64,
    /// Sum of the nodes' own `Total Accesses` counters.
    pub node_accesses_total: u64,
    /// Sum of the nodes' own `Total kBytes`, in bytes.
    pub node_bytes_total: u64,
    pub requests_per_second: f64,
    pub bytes_per_second: f64,
    /// Requests this proxy has in flight.
    pub inflight: u64,
    /// Requests this proxy has sent (all nodes, since start).
    pub proxied_total: u64,
    /// The nodes' own request counters accumulated while this proxy
    /// watched them: never goes down when a node restarts, goes down or
    /// is removed (the cluster's total keeps what removed nodes had).
    pub accesses_accumulated_total: u64,
    /// The same for the nodes' `Total kBytes`, in bytes.
    pub bytes_accumulated_total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSnapshot {
    pub name: String,
    /// `busyness`, `round_robin` or `least_inflight`.
    pub balance: String,
    pub totals: Totals,
    pub nodes: Vec<NodeSnapshot>,
    /// Session affinity: mode and what it did since start.
    pub affinity: AffinitySnapshot,
    /// Content sync lag tolerance: 404 retries and primary-node writes.
    pub content_sync: ContentSyncSnapshot,
    /// Requests waiting for a node under its limit (`cluster::queue`).
    pub queue: QueueSnapshot,
}

/// A group's request queue: now, and counters since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueSnapshot {
    /// Requests waiting now.
    pub length: u64,
    /// The most that ever waited at once.
    pub max_length: u64,
    /// `queue_timeout` in force (the connect timeout when not set).
    pub timeout_seconds: f64,
    /// `max_queue` (0: no limit).
    pub max_queue: u32,
    /// Requests that had to wait (no node they may go to had room).
    pub queued_total: u64,
    /// Answered 503 after `queue_timeout`.
    pub timeouts_total: u64,
    /// Answered 503 at once: the queue was `max_queue` long.
    pub refused_total: u64,
    /// Left by their visitor while waiting (never sent to a node).
    pub abandoned_total: u64,
    /// Median and 99th percentile of the wait of the last 1024 requests
    /// that waited and then went to a node; None before the first.
    pub wait_p50_seconds: Option<f64>,
    pub wait_p99_seconds: Option<f64>,
}

/// A group's session affinity (counters since this process started).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AffinitySnapshot {
    /// `off`, `cookie` or `insert`.
    pub mode: String,
    /// 503 instead of moving a session off its node.
    pub strict: bool,
    /// Cookies that carry the session: the application's (`cookie` mode) or
    /// the proxy's own (`insert` mode); empty when off.
    pub cookies: Vec<String>,
    /// Requests that carried a session and were routed by it.
    pub session_requests_total: u64,
    /// Cookies set naming a node: `insert` mode's (new or moved sessions)
    /// and `cookie` mode's pins (sessions started off their hash node).
    pub cookies_set_total: u64,
    /// Requests sent to another node than their session's, by reason.
    pub switches_total: SwitchCounts,
    /// Requests refused with 503 by `affinity_strict`.
    pub strict_refusals_total: u64,
    /// Per node: session requests it served and sessions moved off it.
    pub nodes: Vec<AffinityNodeSnapshot>,
}

/// Switches by reason (the labels of `webcluster_affinity_switches_total`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SwitchCounts {
    /// The session's node was down (or failed this request).
    pub down: u64,
    /// The session's node was known to have no idle worker.
    pub saturated: u64,
    /// The node was draining and the session new.
    pub draining: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AffinityNodeSnapshot {
    pub name: String,
    /// Opaque id of the node in the `insert` mode cookie.
    pub id: String,
    /// Session requests this node served.
    pub session_requests_total: u64,
    /// Session requests that should have gone to this node but went to
    /// another (it was down, saturated or draining).
    pub sessions_switched_total: u64,
}

/// A group's handling of content sync lag (counters since start).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContentSyncSnapshot {
    /// Whether a route to this group has `retry_on_404`.
    pub retry_on_404: bool,
    /// 404 answers that were retried on another node.
    pub retry_on_404_total: u64,
    /// Requests answered with a non-404 after at least one 404 retry.
    pub retry_on_404_recovered_total: u64,
    /// Primary nodes named by routes to this group.
    pub primaries: Vec<String>,
    /// Write requests sent to a primary node.
    pub primary_requests_total: u64,
    /// Write requests answered 503 because the primary was not usable.
    pub primary_unavailable_total: u64,
    /// Write requests sent to another node because the primary was not
    /// usable and `primary_fallback` is on.
    pub primary_fallback_total: u64,
}

/// Overall state of a node, as the page's indicator shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Health checks pass and its status is fresh.
    Up,
    /// Failed active (`fall`) or passive (`max_fails`) health checks.
    Down,
    /// Configured to drain: no new requests, in-flight ones finish.
    Draining,
    /// Usable, but its status page has not answered for several intervals:
    /// balanced by this proxy's own in-flight counts.
    Stale,
    /// Up with a fresh status, but that status had no idle worker: usable,
    /// but new requests wait for a worker there.
    Full,
    /// Not checked yet (just started or just added).
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeSnapshot {
    pub name: String,
    pub address: String,
    pub status_url: String,
    pub state: NodeState,
    pub backup: bool,
    /// Configured weight.
    pub weight: u32,
    /// Weight after slow start, as the balancer uses it now.
    pub effective_weight: f64,
    /// The page kind's name (`apache`, `nginx`: `status::KINDS`) once known.
    pub server_kind: Option<String>,
    pub server_version: Option<String>,
    pub mpm: Option<String>,
    /// The node's own uptime, seconds.
    pub node_uptime_seconds: Option<u64>,
    pub busy_workers: Option<u32>,
    pub idle_workers: Option<u32>,
    pub capacity: Option<u32>,
    /// How many requests this proxy may have at the node at once
    /// (`cluster::limit`): its free workers by its status page, capped by
    /// `max_conns`; None when there is no limit.
    pub limit: Option<u32>,
    /// Idle keep-alive connections this proxy keeps to the node.
    pub idle_pooled: u64,
    /// The balancer's estimate of busy workers now (scraped busy corrected by
    /// this proxy's requests since the scrape).
    pub estimated_busy: f64,
    /// Apache's scoreboard string as scraped.
    pub scoreboard: Option<String>,
    pub node_accesses_total: Option<u64>,
    pub node_bytes_total: Option<u64>,
    /// From the difference of the last two scrapes.
    pub requests_per_second: Option<f64>,
    pub bytes_per_second: Option<f64>,
    /// Apache `CPULoad` (percent, may exceed 100).
    pub cpu_load: Option<f64>,
    /// 1-minute load average (Apache `Load1`).
    pub load1: Option<f64>,
    /// Requests this proxy has in flight to the node.
    pub inflight: u64,
    /// Requests this proxy sent to the node since start.
    pub proxied_total: u64,
    /// This node's share of the group's proxied requests over the last minute (0..1).
    pub share_last_minute: f64,
    /// Requests that failed at the proxy: connection errors and timeouts
    /// to the node (its own 4xx/5xx answers are `responses_4xx_total` and
    /// `responses_5xx_total`).
    pub errors_total: u64,
    pub scrapes_total: u64,
    pub scrape_failures_total: u64,
    /// Seconds since the last successful scrape.
    pub last_scrape_age_seconds: Option<f64>,
    /// Duration of the last scrape attempt, seconds.
    pub last_scrape_duration_seconds: Option<f64>,
    /// Why the last scrape failed, in words (None if it succeeded).
    pub last_scrape_error: Option<String>,
    /// Why the node is down, if it is.
    pub down_reason: Option<String>,
    /// Whether the last status is recent enough to balance by and the node
    /// is not down: when not,
    /// the worker figures above are the last known, not current ones.
    pub status_fresh: bool,
    /// Answers by class, response times, bytes, peak, downtime, history.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
    /// Set by the operator (`ready`, `drain`, `maint`; `cluster::operator`).
    pub operator_state: crate::cluster::operator::OperatorState,
    /// The weight the operator set in place of the config's, if any.
    pub operator_weight: Option<u32>,
}
