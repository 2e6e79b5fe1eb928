//! The run's summary as JSON: counts, latency percentiles over all visits
//! and over the successful ones, each node's share, and a percentile curve
//! for plotting (the format `benches/load/report.py` reads).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::visit::Record;

/// What the summary says about the run besides the visits themselves.
pub struct Run<'a> {
    pub url: &'a str,
    pub rate: f64,
    pub duration_s: f64,
    pub timeout: Duration,
    pub poisson: bool,
    /// From the first intended arrival to the last visit started.
    pub sending: Duration,
    /// From the first intended arrival to the end of the last visit.
    pub wall: Duration,
    pub max_inflight: usize,
    /// CPU time the generator used (user + system).
    pub cpu: Duration,
}

/// Nearest-rank percentile (`q` in 0..=100) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q / 100.0 * sorted.len() as f64).ceil() as i64 - 1;
    let k = rank.clamp(0, sorted.len() as i64 - 1) as usize;
    Some(sorted[k])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn pct(v: &[f64]) -> Value {
    json!({
        "p50": percentile(v, 50.0),
        "p90": percentile(v, 90.0),
        "p99": percentile(v, 99.0),
        "p99.9": percentile(v, 99.9),
        "max": v.last(),
    })
}

fn is_ok(r: &Record) -> bool {
    r.error.is_none() && matches!(r.status, Some(s) if (200..400).contains(&s))
}

/// Summarises the visits; `None` is a visit that never reported back
/// (counted as unfinished, at the timeout).
pub fn summarise(run: &Run, visits: &[Option<Record>]) -> Value {
    let done: Vec<&Record> = visits.iter().flatten().collect();
    let ok: Vec<&Record> = done.iter().copied().filter(|r| is_ok(r)).collect();
    let timeouts = done
        .iter()
        .filter(|r| r.error.as_deref() == Some("timeout"))
        .count();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for r in &done {
        match r.error.as_deref() {
            Some("timeout") | None => {}
            Some(e) => *errors.entry(e).or_default() += 1,
        }
        if let Some(s) = r.status {
            *statuses.entry(s.to_string()).or_default() += 1;
        }
    }
    let unfinished = visits.len() - done.len();
    let all_lat = sorted(
        visits
            .iter()
            .map(|v| ms(v.as_ref().map_or(run.timeout, |r| r.latency)))
            .collect(),
    );
    let ok_lat = sorted(ok.iter().map(|r| ms(r.latency)).collect());
    let lags = sorted(done.iter().map(|r| ms(r.lag)).collect());
    let mut nodes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_node: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in &ok {
        let n = r.node.as_deref().unwrap_or("?");
        *nodes.entry(n).or_default() += 1;
        by_node.entry(n).or_default().push(ms(r.latency));
    }
    let by_node: BTreeMap<&str, Value> = by_node
        .into_iter()
        .map(|(n, v)| (n, pct(&sorted(v))))
        .collect();
    // Percentile curve for plotting: 1 - q = 10^-x for x in 0..=4.
    let steps = 80;
    let curve: Vec<Value> = (0..=steps)
        .map(|s| {
            let x = 4.0 * s as f64 / steps as f64;
            let q = 100.0 * (1.0 - 10f64.powf(-x));
            json!([(q * 1e4).round() / 1e4, percentile(&all_lat, q)])
        })
        .collect();
    let over_1s = all_lat.iter().filter(|&&v| v >= 1000.0).count();
    json!({
        "generator": "openloop (benches/load/openloop, Rust, one tokio current-thread runtime and a timer thread)",
        "url": run.url,
        "rate": run.rate,
        "duration_s": run.duration_s,
        "timeout_s": run.timeout.as_secs_f64(),
        "arrivals": if run.poisson { "poisson" } else { "uniform" },
        "connection": "new connection per request (Connection: close)",
        "sent": visits.len(),
        "ok": ok.len(),
        "timeouts": timeouts,
        "errors": errors,
        "failed": visits.len() - ok.len(),
        "unfinished": unfinished,
        "over_1s": over_1s,
        "statuses": statuses,
        "achieved_rate": visits.len() as f64 / run.sending.as_secs_f64().max(1e-9),
        "wall_s": run.wall.as_secs_f64(),
        "max_inflight": run.max_inflight,
        "cpu_s": run.cpu.as_secs_f64(),
        "latency_ms": pct(&all_lat),
        "latency_ok_ms": pct(&ok_lat),
        "send_lag_ms": {
            "p50": percentile(&lags, 50.0),
            "p99": percentile(&lags, 99.0),
            "max": lags.last(),
        },
        "nodes": nodes,
        "latency_by_node_ms": by_node,
        "curve": curve,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(latency_ms: u64, status: Option<u16>, node: &str, error: Option<&str>) -> Record {
        Record {
            lag: Duration::from_micros(100),
            latency: Duration::from_millis(latency_ms),
            status,
            node: Some(node.to_owned()),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 99.9), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn failures_timeouts_and_unfinished_count_against_the_run() {
        let visits = vec![
            Some(record(20, Some(200), "n1", None)),
            Some(record(22, Some(200), "n2", None)),
            Some(record(21, Some(503), "n2", None)),
            Some(record(5000, None, "n1", Some("timeout"))),
            Some(record(1, None, "n1", Some("ConnectionRefused"))),
            None,
        ];
        let run = Run {
            url: "http://127.0.0.1:1/",
            rate: 6.0,
            duration_s: 1.0,
            timeout: Duration::from_secs(5),
            poisson: false,
            sending: Duration::from_secs(1),
            wall: Duration::from_secs(6),
            max_inflight: 3,
            cpu: Duration::ZERO,
        };
        let s = summarise(&run, &visits);
        assert_eq!(s["sent"], 6);
        assert_eq!(s["ok"], 2);
        assert_eq!(s["failed"], 4);
        assert_eq!(s["timeouts"], 1);
        assert_eq!(s["unfinished"], 1);
        assert_eq!(s["errors"]["ConnectionRefused"], 1);
        assert_eq!(s["statuses"]["503"], 1);
        assert_eq!(s["over_1s"], 2);
        assert_eq!(s["nodes"]["n1"], 1);
        assert_eq!(s["nodes"]["n2"], 1);
        assert_eq!(s["latency_ms"]["max"], 5000.0);
        assert_eq!(s["latency_ok_ms"]["max"], 22.0);
        assert_eq!(s["curve"].as_array().map(Vec::len), Some(81));
    }
}
