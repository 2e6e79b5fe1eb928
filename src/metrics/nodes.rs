//! The per-node metrics, as one table: [`NODE_METRICS`].
//!
//! Each row says everything about one `webcluster_node_*` family: its name,
//! help text, type and unit, labels, how to read it off a node of the
//! cluster snapshot (`src/cluster/snapshot.rs`), and which field of the node
//! in `/status.json` carries the same figure. The Prometheus families are
//! built from the rows at scrape time ([`families`]), and the table of
//! `docs/metrics.md` is generated from them ([`docs_table`]; a test fails
//! with the new text when the file is stale). Adding a node metric is adding
//! a row (see `CONTRIBUTING.md`, "Add a metric").

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::cluster::snapshot::{ClusterSnapshot, NodeSnapshot, NodeState};

/// Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// How a family's series are read off one node of the snapshot.
#[derive(Clone, Copy)]
pub enum Read {
    /// One series per node, labelled `group` and `node`; none for the node
    /// when the figure is not known (`None`).
    Value(fn(&NodeSnapshot) -> Option<f64>),
    /// As `Value`, but only while the node's status is fresh
    /// (`status_fresh`): a down or stale node's last figures are not
    /// exported as if they were current, the series is left out.
    Fresh(fn(&NodeSnapshot) -> Option<f64>),
    /// One series per node and value of one more label: 1 for the value
    /// `current` names, 0 for the others (an enum as Prometheus wants it).
    OneOf {
        label: &'static str,
        values: &'static [&'static str],
        current: fn(&NodeSnapshot) -> &'static str,
    },
}

/// One row of the table: one `webcluster_node_*` family.
pub struct NodeMetric {
    /// Full metric name.
    pub name: &'static str,
    /// `# HELP` text (dashboards and `tests/admin.rs` rely on it: keep it).
    pub help: &'static str,
    /// More words for `docs/metrics.md` only, after the help text.
    pub doc_note: &'static str,
    pub kind: Kind,
    /// Unit of the value, for the docs (base units, as in the name); `""`
    /// for a plain number.
    pub unit: &'static str,
    pub read: Read,
    /// The node field of `/status.json` with the same figure, if any.
    pub json: Option<&'static str>,
}

/// Labels every node family has.
pub const NODE_LABELS: [&str; 2] = ["group", "node"];

impl NodeMetric {
    /// The family's labels: `group`, `node`, and the one of a
    /// [`Read::OneOf`].
    pub fn labels(&self) -> Vec<&'static str> {
        let mut labels = NODE_LABELS.to_vec();
        if let Read::OneOf { label, .. } = self.read {
            labels.push(label);
        }
        labels
    }
}

/// Node states by their word (as in `/status.json`).
const STATES: [(NodeState, &str); 6] = [
    (NodeState::Up, "up"),
    (NodeState::Full, "full"),
    (NodeState::Down, "down"),
    (NodeState::Draining, "draining"),
    (NodeState::Stale, "stale"),
    (NodeState::Unknown, "unknown"),
];

fn state_word(n: &NodeSnapshot) -> &'static str {
    STATES
        .iter()
        .find(|(s, _)| *s == n.state)
        .map_or("unknown", |(_, w)| w)
}

fn flag(b: bool) -> Option<f64> {
    Some(f64::from(u8::from(b)))
}

/// Every per-node family, in the order of `docs/metrics.md` (the output is
/// sorted by name).
pub static NODE_METRICS: &[NodeMetric] = &[
    NodeMetric {
        name: "webcluster_node_up",
        help: "1 if the node may get requests (up, stale or unknown), 0 if down or draining.",
        doc_note: "Full counts as up (1).",
        kind: Kind::Gauge,
        unit: "",
        read: Read::Value(|n| {
            flag(matches!(
                n.state,
                NodeState::Up | NodeState::Full | NodeState::Stale | NodeState::Unknown
            ))
        }),
        json: None,
    },
    NodeMetric {
        name: "webcluster_node_state",
        help: "1 for the node's current state: up, down, draining, stale or unknown.",
        doc_note: "One series per state, the others 0. `full`: up with a fresh status that had no idle worker.",
        kind: Kind::Gauge,
        unit: "",
        read: Read::OneOf {
            label: "state",
            values: &["up", "full", "down", "draining", "stale", "unknown"],
            current: state_word,
        },
        json: Some("state"),
    },
    NodeMetric {
        name: "webcluster_node_operator_state",
        help: "1 for the state an operator set on the node: ready, drain or maint.",
        doc_note: "One series per state, the others 0. Set with `webcluster node` or the admin API; `ready` is the config's own behaviour.",
        kind: Kind::Gauge,
        unit: "",
        read: Read::OneOf {
            label: "state",
            values: &["ready", "drain", "maint"],
            current: |n| n.operator_state.as_str(),
        },
        json: Some("operator_state"),
    },
    NodeMetric {
        name: "webcluster_node_operator_weight",
        help: "The weight an operator set on the node in place of the configured one.",
        doc_note: "No series while the configured weight applies.",
        kind: Kind::Gauge,
        unit: "",
        read: Read::Value(|n| n.operator_weight.map(f64::from)),
        json: Some("operator_weight"),
    },
    NodeMetric {
        name: "webcluster_node_busy_workers",
        help: "Busy workers in the node's last status (BusyWorkers; nginx: reading + writing).",
        doc_note: "No series while the status is not fresh (down, stale): sums over nodes stay current.",
        kind: Kind::Gauge,
        unit: "workers",
        read: Read::Fresh(|n| n.busy_workers.map(f64::from)),
        json: Some("busy_workers"),
    },
    NodeMetric {
        name: "webcluster_node_idle_workers",
        help: "Idle workers in the node's last status (IdleWorkers).",
        doc_note: "No series while the status is not fresh.",
        kind: Kind::Gauge,
        unit: "workers",
        read: Read::Fresh(|n| n.idle_workers.map(f64::from)),
        json: Some("idle_workers"),
    },
    NodeMetric {
        name: "webcluster_node_capacity_workers",
        help: "Worker capacity of the node (scoreboard length, or the configured max_workers).",
        doc_note: "No series while the status is not fresh.",
        kind: Kind::Gauge,
        unit: "workers",
        read: Read::Fresh(|n| n.capacity.map(f64::from)),
        json: Some("capacity"),
    },
    NodeMetric {
        name: "webcluster_node_estimated_busy_workers",
        help: "The balancer's estimate of the node's busy workers now.",
        doc_note: "",
        kind: Kind::Gauge,
        unit: "workers",
        read: Read::Value(|n| Some(n.estimated_busy)),
        json: Some("estimated_busy"),
    },
    NodeMetric {
        name: "webcluster_node_limit",
        help: "How many requests this proxy may have at the node at once: its free workers by its status page, capped by max_conns.",
        doc_note: "Requests over it wait in the group's queue (`webcluster_queue_length`). A stale node keeps the limit of its last page (at least 1). No series while there is no limit (no worker count read yet, no `max_conns`).",
        kind: Kind::Gauge,
        unit: "requests",
        read: Read::Value(|n| n.limit.map(f64::from)),
        json: Some("limit"),
    },
    NodeMetric {
        name: "webcluster_node_idle_connections",
        help: "Idle keep-alive connections this proxy keeps to the node.",
        doc_note: "On a node that holds a worker per connection (Apache prefork, worker) they count against its limit.",
        kind: Kind::Gauge,
        unit: "connections",
        read: Read::Value(|n| Some(n.idle_pooled as f64)),
        json: Some("idle_pooled"),
    },
    NodeMetric {
        name: "webcluster_node_effective_weight",
        help: "Weight the balancer uses now (configured weight x slow-start ramp).",
        doc_note: "",
        kind: Kind::Gauge,
        unit: "",
        read: Read::Value(|n| Some(n.effective_weight)),
        json: Some("effective_weight"),
    },
    NodeMetric {
        name: "webcluster_node_inflight_requests",
        help: "Requests this proxy has in flight to the node.",
        doc_note: "",
        kind: Kind::Gauge,
        unit: "requests",
        read: Read::Value(|n| Some(n.inflight as f64)),
        json: Some("inflight"),
    },
    NodeMetric {
        name: "webcluster_node_accesses_total",
        help: "The node's own request counter (Apache Total Accesses; nginx requests).",
        doc_note: "Resets when the node restarts.",
        kind: Kind::Counter,
        unit: "requests",
        read: Read::Value(|n| n.node_accesses_total.map(|x| x as f64)),
        json: Some("node_accesses_total"),
    },
    NodeMetric {
        name: "webcluster_node_sent_bytes_total",
        help: "The node's own counter of bytes served (Apache Total kBytes x 1024).",
        doc_note: "Resets when the node restarts.",
        kind: Kind::Counter,
        unit: "bytes",
        read: Read::Value(|n| n.node_bytes_total.map(|x| x as f64)),
        json: Some("node_bytes_total"),
    },
    NodeMetric {
        name: "webcluster_node_scrapes_total",
        help: "Status page scrapes attempted.",
        doc_note: "",
        kind: Kind::Counter,
        unit: "scrapes",
        read: Read::Value(|n| Some(n.scrapes_total as f64)),
        json: Some("scrapes_total"),
    },
    NodeMetric {
        name: "webcluster_node_scrape_failures_total",
        help: "Status page scrapes that failed.",
        doc_note: "",
        kind: Kind::Counter,
        unit: "scrapes",
        read: Read::Value(|n| Some(n.scrape_failures_total as f64)),
        json: Some("scrape_failures_total"),
    },
    NodeMetric {
        name: "webcluster_node_scrape_duration_seconds",
        help: "Duration of the last status page scrape.",
        doc_note: "",
        kind: Kind::Gauge,
        unit: "seconds",
        read: Read::Value(|n| n.last_scrape_duration_seconds),
        json: Some("last_scrape_duration_seconds"),
    },
    NodeMetric {
        name: "webcluster_node_status_age_seconds",
        help: "Age of the last successful status page scrape.",
        doc_note: "",
        kind: Kind::Gauge,
        unit: "seconds",
        read: Read::Value(|n| n.last_scrape_age_seconds),
        json: Some("last_scrape_age_seconds"),
    },
    NodeMetric {
        name: "webcluster_node_status_fresh",
        help: "1 if the node's last status is recent enough to balance by, else 0.",
        doc_note: "The worker gauges have series only while this is 1.",
        kind: Kind::Gauge,
        unit: "",
        read: Read::Value(|n| flag(n.status_fresh)),
        json: None,
    },
    NodeMetric {
        name: "webcluster_node_down_total",
        help: "Times the node went down since this process started.",
        doc_note: "",
        kind: Kind::Counter,
        unit: "",
        read: Read::Value(|n| Some(n.stats.times_down as f64)),
        json: Some("times_down"),
    },
    NodeMetric {
        name: "webcluster_node_downtime_seconds_total",
        help: "Seconds the node spent down since this process started.",
        doc_note: "",
        kind: Kind::Counter,
        unit: "seconds",
        read: Read::Value(|n| Some(n.stats.downtime_seconds)),
        json: Some("downtime_seconds"),
    },
    NodeMetric {
        name: "webcluster_node_peak_inflight_requests",
        help: "Most requests this proxy had in flight to the node at once since start.",
        doc_note: "",
        kind: Kind::Gauge,
        unit: "requests",
        read: Read::Value(|n| Some(n.stats.peak_inflight as f64)),
        json: Some("peak_inflight"),
    },
];

fn sample(labels: &[(&str, &str)], kind: Kind, value: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v.to_string());
                l
            })
            .collect(),
    );
    match kind {
        Kind::Counter => {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
        Kind::Gauge => {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
    }
    m
}

/// One family's series for every node of the snapshot (nodes removed by a
/// reload disappear from it at once); `None` when it has none.
fn family(row: &NodeMetric, snap: &ClusterSnapshot) -> Option<MetricFamily> {
    let mut metrics = Vec::new();
    for group in &snap.groups {
        for n in &group.nodes {
            let l = [("group", group.name.as_str()), ("node", n.name.as_str())];
            match row.read {
                Read::Value(read) => {
                    if let Some(v) = read(n) {
                        metrics.push(sample(&l, row.kind, v));
                    }
                }
                Read::Fresh(read) => {
                    if let Some(v) = read(n).filter(|_| n.status_fresh) {
                        metrics.push(sample(&l, row.kind, v));
                    }
                }
                Read::OneOf {
                    label,
                    values,
                    current,
                } => {
                    let now = current(n);
                    for value in values {
                        let v = f64::from(u8::from(*value == now));
                        metrics.push(sample(&[l[0], l[1], (label, value)], row.kind, v));
                    }
                }
            }
        }
    }
    if metrics.is_empty() {
        return None;
    }
    let mut f = MetricFamily::default();
    f.set_name(row.name.to_string());
    f.set_help(row.help.to_string());
    f.set_field_type(match row.kind {
        Kind::Gauge => MetricType::GAUGE,
        Kind::Counter => MetricType::COUNTER,
    });
    f.set_metric(metrics);
    Some(f)
}

/// Every per-node family of [`NODE_METRICS`], read from a snapshot.
pub fn families(snap: &ClusterSnapshot) -> Vec<MetricFamily> {
    NODE_METRICS
        .iter()
        .filter_map(|row| family(row, snap))
        .collect()
}

/// The Markdown table of `docs/metrics.md` ("Per node"), one line per row.
pub fn docs_table() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from(
        "| Name | Type | Unit | Labels | `/status.json` field | Meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    for row in NODE_METRICS {
        let meaning = if row.doc_note.is_empty() {
            row.help.to_string()
        } else {
            format!("{} {}", row.help, row.doc_note)
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            row.name,
            row.kind.as_str(),
            if row.unit.is_empty() { "-" } else { row.unit },
            row.labels().join(", "),
            row.json.map_or("-".to_string(), |f| format!("`{f}`")),
            cell(&meaning),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::sample;

    #[test]
    fn rows_follow_the_naming_conventions() {
        let mut names = std::collections::HashSet::new();
        for row in NODE_METRICS {
            assert!(names.insert(row.name), "{} twice", row.name);
            assert!(row.name.starts_with("webcluster_node_"), "{}", row.name);
            assert!(
                row.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                row.name
            );
            assert_eq!(
                row.name.ends_with("_total"),
                row.kind == Kind::Counter,
                "{}: `_total` is for counters only",
                row.name
            );
            if matches!(row.unit, "seconds" | "bytes") {
                let base = row.name.trim_end_matches("_total");
                assert!(base.ends_with(row.unit), "{}: unit suffix", row.name);
            }
            assert!(
                !row.help.is_empty() && row.help.ends_with('.'),
                "{}",
                row.name
            );
            assert!(!row.help.contains('\n'), "{}", row.name);
        }
    }

    /// Each row with a `json` field reads the same figure as that field of
    /// the node in `/status.json` (`null` where there is no series).
    #[test]
    fn rows_agree_with_the_status_json() {
        let s = sample::snapshot();
        for n in s.groups.iter().flat_map(|g| &g.nodes) {
            let json = serde_json::to_value(n).expect("a node serialises");
            for row in NODE_METRICS {
                let Some(field) = row.json else { continue };
                let value = &json[field];
                match row.read {
                    Read::Value(read) => {
                        assert_eq!(value.as_f64(), read(n), "{} vs {field}", row.name);
                        assert_eq!(value.is_null(), read(n).is_none(), "{field}");
                    }
                    Read::Fresh(read) => {
                        assert_eq!(value.as_f64(), read(n), "{} vs {field}", row.name);
                    }
                    Read::OneOf {
                        values, current, ..
                    } => {
                        assert_eq!(value.as_str(), Some(current(n)), "{field}");
                        assert!(values.contains(&current(n)), "{}", row.name);
                    }
                }
            }
        }
    }

    #[test]
    fn every_state_has_its_series() {
        let s = sample::snapshot();
        let text = crate::metrics::Metrics::new().render(&s);
        for (state, word) in [
            ("web-1", "up"),
            ("web-4", "draining"),
            ("static-1", "stale"),
            ("static-2", "unknown"),
        ] {
            let line = format!(
                "webcluster_node_state{{group=\"{g}\",node=\"{state}\",state=\"{word}\"}} 1",
                g = if state.starts_with("web") {
                    "web"
                } else {
                    "static"
                }
            );
            assert!(text.contains(&line), "{line} missing");
        }
        // a node with no status yet has no worker series, but its counters
        assert!(!text.contains("webcluster_node_busy_workers{group=\"static\",node=\"static-2\"}"));
        assert!(
            text.contains("webcluster_node_scrapes_total{group=\"static\",node=\"static-2\"} 0")
        );
    }

    /// `docs/metrics.md` holds [`docs_table`] between its markers. When it
    /// is stale this fails with the new table; `WEBCLUSTER_BLESS=1 cargo test
    /// --lib docs_table` writes it.
    #[test]
    fn docs_table_is_current() {
        const BEGIN: &str = "<!-- BEGIN node metrics table";
        const END: &str = "<!-- END node metrics table -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
        let doc = std::fs::read_to_string(&path).expect("read docs/metrics.md");
        let start = doc
            .find(BEGIN)
            .expect("docs/metrics.md has the BEGIN marker");
        let start = start + doc[start..].find('\n').expect("a line after BEGIN") + 1;
        let end = doc.find(END).expect("docs/metrics.md has the END marker");
        let want = format!("\n{}\n", docs_table());
        if doc[start..end] != want {
            if std::env::var_os("WEBCLUSTER_BLESS").is_some() {
                let new = format!("{}{want}{}", &doc[..start], &doc[end..]);
                std::fs::write(&path, new).expect("write docs/metrics.md");
            } else {
                panic!(
                    "docs/metrics.md is stale: put this between its node metrics markers \
                     (or run `WEBCLUSTER_BLESS=1 cargo test --lib docs_table`):\n{want}"
                );
            }
        }
    }
}
