//! Prometheus metrics: the counters the proxy keeps per request, and the
//! per-node gauges rendered from a cluster snapshot at scrape time (their
//! one table, [`nodes::NODE_METRICS`], is in `src/metrics/nodes.rs`).
//!
//! Naming follows Prometheus conventions: `webcluster_` prefix, base units
//! (seconds, bytes), `_total` for counters, no lifetime averages. Everything
//! lives in this process's own `Registry` (nothing global), encoded as the
//! text format on `/metrics`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use thread_local::ThreadLocal;

use crate::cluster::node::NodeLive;
use crate::cluster::snapshot::ClusterSnapshot;

pub mod nodes;

/// Request duration buckets, seconds: from 1 ms to 60 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    // kept by the proxy, per request
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub retries: IntCounterVec,
    pub connect_failures: IntCounterVec,
    pub no_node: IntCounterVec,
    pub denied_status_paths: IntCounter,
    pub bad_requests: IntCounter,
    pub affinity_switches: IntCounterVec,
    pub retry_on_404: IntCounterVec,
    /// Requests answered, by the visitor's protocol.
    pub requests_by_protocol: IntCounterVec,
    /// HTTP/2 visitor connections open now (set from the snapshot).
    pub http2_connections: IntGauge,
    /// HTTP/2 streams being served now (set from the snapshot).
    pub http2_streams: IntGauge,
    /// The group queues (`cluster::queue`): how long requests waited for a
    /// slot, and how many were refused (`max_queue`), timed out
    /// (`queue_timeout`) or left by their visitor while they waited.
    pub queue_wait: HistogramVec,
    pub queue_refused: IntCounterVec,
    pub queue_timeouts: IntCounterVec,
    pub queue_abandoned: IntCounterVec,
    /// Requests waiting in each group's queue, set from the snapshot.
    pub queue_length: IntGaugeVec,
    pub reloads: IntCounterVec,
    /// Lookups of node host names and SRV names (`crate::discovery`).
    pub dns_resolutions: IntCounterVec,
    pub last_reload: IntGauge,
    pub config_info: IntGaugeVec,
    /// 1 while the last reload attempt failed.
    pub last_reload_failed: IntGauge,
    /// Visitors' TLS handshakes, by result and protocol version.
    pub tls_handshakes: IntCounterVec,
    /// Each TLS certificate's expiry, set from the snapshot at scrape time.
    pub tls_certificate_expiry: IntGaugeVec,
    /// `requests_by_protocol`'s series, resolved once.
    by_protocol: [IntCounter; 3],
    /// Each thread's handles of the per-node series of `requests` and
    /// `request_duration` (see [`Metrics::record_node_request`]).
    node_series: ThreadLocal<RefCell<Vec<NodeSeries>>>,
}

/// One node's series of `requests` (by class, resolved as they first
/// occur) and `request_duration`, held by one thread. The node's live
/// state is the key: it is the same object for as long as the node keeps
/// its group, name and address across reloads, and held here it cannot be
/// freed and its address reused by another node.
#[derive(Debug)]
struct NodeSeries {
    live: Arc<NodeLive>,
    group: Box<str>,
    node: Box<str>,
    by_class: [Option<IntCounter>; CLASSES.len()],
    duration: Histogram,
}

/// The status classes, in [`class_index`] order.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn class_index(code: u16) -> usize {
    match code {
        100..=599 => usize::from(code / 100 - 1),
        _ => 5,
    }
}

/// The visitors' protocols, as `requests_by_protocol` labels them.
const PROTOCOLS: [&str; 3] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"];

/// Nodes a thread keeps series for before it drops those of nodes no
/// longer in the configuration.
const NODE_SERIES_PRUNE_AT: usize = 64;

const NODE_LABELS: &[&str] = &["group", "node"];

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, metric: T) -> T {
    // Names are static and registered once per Registry: this cannot fail.
    if let Err(e) = r.register(Box::new(metric.clone())) {
        tracing::error!("registering a metric failed: {e}");
    }
    metric
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"),
    )
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let requests_by_protocol = counter(
            &r,
            "webcluster_requests_by_protocol_total",
            "Requests answered, by the visitor's protocol (HTTP/1.0, HTTP/1.1, HTTP/2.0).",
            &["protocol"],
        );
        let m = Metrics {
            requests: counter(
                &r,
                "webcluster_requests_total",
                "Requests answered, by group, node and status class (node \"-\" when no node answered).",
                &["group", "node", "code"],
            ),
            request_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "webcluster_request_duration_seconds",
                        "Time from receiving a request to the end of its response, by group and node.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    NODE_LABELS,
                )
                .expect("static metric definition"),
            ),
            retries: counter(
                &r,
                "webcluster_retries_total",
                "Requests retried on another node, by group.",
                &["group"],
            ),
            connect_failures: counter(
                &r,
                "webcluster_upstream_connect_failures_total",
                "Failed connection attempts to a node.",
                NODE_LABELS,
            ),
            no_node: counter(
                &r,
                "webcluster_no_usable_node_total",
                "Requests answered 502/504 because no node of the group could serve them.",
                &["group"],
            ),
            denied_status_paths: register(
                &r,
                IntCounter::new(
                    "webcluster_denied_status_path_requests_total",
                    "Requests refused with 403 because they asked for a node status page.",
                )
                .expect("static metric definition"),
            ),
            bad_requests: register(
                &r,
                IntCounter::new(
                    "webcluster_bad_requests_total",
                    "Request heads refused before any node saw them (400, 431, 501): malformed, \
                     too large, or with a framing that is not certain.",
                )
                .expect("static metric definition"),
            ),
            reloads: counter(
                &r,
                "webcluster_config_reloads_total",
                "Config reloads, by result (success, failure).",
                &["result"],
            ),
            dns_resolutions: counter(
                &r,
                "webcluster_dns_resolutions_total",
                "DNS lookups of node host names and SRV names, by group and result (success, failure; a failure keeps the last good answer).",
                &["group", "result"],
            ),
            last_reload: register(
                &r,
                IntGauge::new(
                    "webcluster_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful config load.",
                )
                .expect("static metric definition"),
            ),
            config_info: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "webcluster_config_info",
                        "Always 1; the labels say which config file and hash are live.",
                    ),
                    &["path", "hash"],
                )
                .expect("static metric definition"),
            ),
            affinity_switches: counter(
                &r,
                "webcluster_affinity_switches_total",
                "Session requests sent to another node than their session's, by group and reason (down, saturated, draining).",
                &["group", "reason"],
            ),
            retry_on_404: counter(
                &r,
                "webcluster_retry_on_404_total",
                "404 answers retried on another node of the group (retry_on_404 routes).",
                &["group"],
            ),
            // Every protocol's series exists from the start, at 0.
            by_protocol: PROTOCOLS.map(|p| requests_by_protocol.with_label_values(&[p])),
            requests_by_protocol,
            http2_connections: register(
                &r,
                IntGauge::new(
                    "webcluster_http2_connections",
                    "HTTP/2 visitor connections open now.",
                )
                .expect("static metric definition"),
            ),
            http2_streams: register(
                &r,
                IntGauge::new(
                    "webcluster_http2_streams",
                    "HTTP/2 streams being served now (each one request).",
                )
                .expect("static metric definition"),
            ),
            queue_wait: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "webcluster_queue_wait_seconds",
                        "Time requests waited in their group's queue for a node under its limit, by group (requests that waited and then went to a node).",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["group"],
                )
                .expect("static metric definition"),
            ),
            queue_refused: counter(
                &r,
                "webcluster_queue_refusals_total",
                "Requests answered 503 at once because their group's queue was max_queue long, by group.",
                &["group"],
            ),
            queue_timeouts: counter(
                &r,
                "webcluster_queue_timeouts_total",
                "Requests answered 503 because they waited queue_timeout in their group's queue, by group.",
                &["group"],
            ),
            queue_abandoned: counter(
                &r,
                "webcluster_queue_abandoned_total",
                "Requests whose visitor closed the connection while they waited in the group's queue (never sent to a node), by group.",
                &["group"],
            ),
            queue_length: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "webcluster_queue_length",
                        "Requests waiting in the group's queue now, by group.",
                    ),
                    &["group"],
                )
                .expect("static metric definition"),
            ),
            last_reload_failed: register(
                &r,
                IntGauge::new(
                    "webcluster_config_last_reload_failed",
                    "1 if the last config reload attempt failed (the previous config still serves), else 0.",
                )
                .expect("static metric definition"),
            ),
            tls_handshakes: counter(
                &r,
                "webcluster_tls_handshakes_total",
                "Visitors' TLS handshakes, by result (success, failure, timeout) and version (TLSv1.3, TLSv1.2; \"-\" when none was agreed).",
                &["result", "version"],
            ),
            node_series: ThreadLocal::new(),
            tls_certificate_expiry: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "webcluster_tls_certificate_expiry_timestamp_seconds",
                        "Unix time at which each TLS listener's certificate expires (its notAfter), by listener (1, 2, ... in config order), chain file and subject.",
                    ),
                    &["listener", "chain", "subject"],
                )
                .expect("static metric definition"),
            ),
            registry: r,
        };
        let build = register(
            &m.registry,
            IntGaugeVec::new(
                Opts::new(
                    "webcluster_build_info",
                    "Always 1; the labels say which build of webcluster runs.",
                ),
                &["version"],
            )
            .expect("static metric definition"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // process_* (open and max fds, resident and virtual memory, CPU
        // seconds, start time), read from /proc at each scrape; Linux only.
        #[cfg(target_os = "linux")]
        if let Err(e) = m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::error!("registering the process metrics failed: {e}");
        }
        // Every known label value exists from the start, at 0, so that
        // `rate()` and `increase()` see the first event (Prometheus practice).
        for result in ["success", "failure"] {
            m.reloads.with_label_values(&[result]);
        }
        m
    }

    /// A request answered over `protocol` (`HTTP/1.1`, ...).
    pub fn record_protocol(&self, protocol: &str) {
        match PROTOCOLS.iter().position(|p| *p == protocol) {
            Some(i) => self.by_protocol[i].inc(),
            None => self
                .requests_by_protocol
                .with_label_values(&[protocol])
                .inc(),
        }
    }

    /// A request `node` of `group` answered with `status`, `took` from
    /// its arrival to the end of its response: its `requests` and
    /// `request_duration` series. Through this thread's handles of the
    /// node's series: `with_label_values` hashes the labels and takes a
    /// lock on every call, about 150 instructions each, twice per request
    /// (`benches/README.md`, "Twelfth session").
    pub fn record_node_request(
        &self,
        group: &str,
        node: &str,
        live: &Arc<NodeLive>,
        status: u16,
        took: Duration,
    ) {
        let class = class_index(status);
        let mut series = self.node_series.get_or_default().borrow_mut();
        let found = series
            .iter()
            .position(|s| Arc::ptr_eq(&s.live, live) && &*s.group == group && &*s.node == node);
        let i = match found {
            Some(i) => i,
            None => {
                if series.len() >= NODE_SERIES_PRUNE_AT {
                    // Held only here: the node left the configuration.
                    series.retain(|s| Arc::strong_count(&s.live) > 1);
                }
                series.push(NodeSeries {
                    live: Arc::clone(live),
                    group: group.into(),
                    node: node.into(),
                    by_class: Default::default(),
                    duration: self.request_duration.with_label_values(&[group, node]),
                });
                series.len() - 1
            }
        };
        let s = &mut series[i];
        s.by_class[class]
            .get_or_insert_with(|| {
                self.requests
                    .with_label_values(&[group, node, CLASSES[class]])
            })
            .inc();
        s.duration.observe(took.as_secs_f64());
    }

    /// The text exposition of every metric, with the per-node families
    /// built from `snap`.
    pub fn render(&self, snap: &ClusterSnapshot) -> String {
        // Counters of the configured groups and nodes exist at 0 before
        // their first event (a node's first connect failure is then an
        // increase, not a new series).
        for group in &snap.groups {
            self.retries.with_label_values(&[group.name.as_str()]);
            let g = &[group.name.as_str()];
            self.queue_wait.with_label_values(g);
            self.queue_refused.with_label_values(g);
            self.queue_timeouts.with_label_values(g);
            self.queue_abandoned.with_label_values(g);
            self.queue_length
                .with_label_values(g)
                .set(i64::try_from(group.queue.length).unwrap_or(i64::MAX));
            self.no_node.with_label_values(&[group.name.as_str()]);
            for n in &group.nodes {
                self.connect_failures
                    .with_label_values(&[group.name.as_str(), n.name.as_str()]);
                for class in ["2xx", "3xx", "4xx", "5xx"] {
                    self.requests
                        .with_label_values(&[group.name.as_str(), n.name.as_str(), class]);
                }
            }
            if group.affinity.mode != "off" {
                for reason in ["down", "saturated", "draining"] {
                    self.affinity_switches
                        .with_label_values(&[group.name.as_str(), reason]);
                }
            }
            if group.content_sync.retry_on_404 {
                self.retry_on_404.with_label_values(&[group.name.as_str()]);
            }
        }
        self.last_reload_failed
            .set(i64::from(snap.config.last_reload_error.is_some()));
        let v = &snap.visitors;
        self.http2_connections
            .set(i64::try_from(v.http2_connections).unwrap_or(i64::MAX));
        self.http2_streams
            .set(i64::try_from(v.http2_streams).unwrap_or(i64::MAX));
        for d in &snap.dns {
            for g in &d.groups {
                for result in ["success", "failure"] {
                    self.dns_resolutions
                        .with_label_values(&[g.as_str(), result]);
                }
            }
        }
        if !snap.tls.is_empty() {
            for labels in [
                ["success", "TLSv1.3"],
                ["success", "TLSv1.2"],
                ["failure", "-"],
                ["timeout", "-"],
            ] {
                self.tls_handshakes.with_label_values(&labels);
            }
        }
        self.tls_certificate_expiry.reset();
        for (i, listener) in snap.tls.iter().enumerate() {
            let index = (i + 1).to_string();
            for c in &listener.certificates {
                self.tls_certificate_expiry
                    .with_label_values(&[index.as_str(), c.chain_file.as_str(), c.subject.as_str()])
                    .set(c.not_after_unix);
            }
        }
        self.config_info.reset();
        self.config_info
            .with_label_values(&[snap.config.path.as_str(), snap.config.hash.as_str()])
            .set(1);
        let mut families = self.registry.gather();
        families.extend(nodes::families(snap));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!("encoding metrics failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `2xx`, `4xx`, ... for a status code (`other` outside 100–599).
pub fn code_class(code: u16) -> &'static str {
    CLASSES[class_index(code)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_status_codes() {
        for (code, class) in [
            (0, "other"),
            (99, "other"),
            (100, "1xx"),
            (199, "1xx"),
            (200, "2xx"),
            (304, "3xx"),
            (404, "4xx"),
            (500, "5xx"),
            (599, "5xx"),
            (600, "other"),
            (u16::MAX, "other"),
        ] {
            assert_eq!(code_class(code), class, "{code}");
        }
    }

    #[test]
    fn node_requests_go_to_the_labelled_series() {
        let m = Metrics::new();
        let a = Arc::new(NodeLive::new(false));
        let b = Arc::new(NodeLive::new(false));
        let ms = Duration::from_millis(3);
        m.record_node_request("web", "a", &a, 200, ms);
        m.record_node_request("web", "a", &a, 204, ms);
        m.record_node_request("web", "a", &a, 503, ms);
        m.record_node_request("web", "b", &b, 404, ms);
        m.record_node_request("web", "b", &b, 99, ms);
        // A reload that gave node a a new live state (a new address): the
        // same series go on.
        let a2 = Arc::new(NodeLive::new(true));
        m.record_node_request("web", "a", &a2, 200, ms);
        let count =
            |node: &str, class: &str| m.requests.with_label_values(&["web", node, class]).get();
        assert_eq!(count("a", "2xx"), 3);
        assert_eq!(count("a", "5xx"), 1);
        assert_eq!(count("b", "4xx"), 1);
        assert_eq!(count("b", "other"), 1);
        assert_eq!(count("b", "2xx"), 0);
        let took = |node: &str| {
            m.request_duration
                .with_label_values(&["web", node])
                .get_sample_count()
        };
        assert_eq!((took("a"), took("b")), (4, 2));
        // Another thread: its own handles, the same series.
        std::thread::scope(|s| {
            s.spawn(|| m.record_node_request("web", "b", &b, 201, ms));
        });
        assert_eq!(count("b", "2xx"), 1);
    }

    #[test]
    fn series_of_nodes_gone_from_the_configuration_are_let_go() {
        let m = Metrics::new();
        let kept = Arc::new(NodeLive::new(false));
        m.record_node_request("web", "kept", &kept, 200, Duration::ZERO);
        for i in 0..NODE_SERIES_PRUNE_AT * 3 {
            let gone = Arc::new(NodeLive::new(false));
            m.record_node_request("web", &format!("n{i}"), &gone, 200, Duration::ZERO);
        }
        let held = m.node_series.get().expect("this thread's").borrow().len();
        assert!(
            held <= NODE_SERIES_PRUNE_AT + 1,
            "{held} nodes' series held"
        );
        assert_eq!(
            Arc::strong_count(&kept),
            2,
            "a configured node's series stay"
        );
        m.record_node_request("web", "kept", &kept, 200, Duration::ZERO);
        assert_eq!(
            m.requests.with_label_values(&["web", "kept", "2xx"]).get(),
            2
        );
    }

    #[test]
    fn protocols_are_counted() {
        let m = Metrics::new();
        m.record_protocol("HTTP/1.1");
        m.record_protocol("HTTP/1.1");
        m.record_protocol("HTTP/2.0");
        m.record_protocol("HTTP/0.9");
        let count = |p: &str| m.requests_by_protocol.with_label_values(&[p]).get();
        assert_eq!(
            (count("HTTP/1.0"), count("HTTP/1.1"), count("HTTP/2.0")),
            (0, 2, 1)
        );
        assert_eq!(count("HTTP/0.9"), 1);
    }
}
