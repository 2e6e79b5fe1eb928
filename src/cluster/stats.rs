//! What the status page and the `?auto` totals need of a node beyond its
//! health and load: answers by class, response times, bytes, peak
//! concurrency, a short history, time in the current state and downtime,
//! and the node's own request and byte counters accumulated across its
//! restarts.
//!
//! One [`NodeStats`] lives in each node's live state (`NodeLive::stats`)
//! and outlives reloads with it. The proxy feeds it once per answered
//! request ([`NodeStats::record_response`]); the node's scrapes feed the
//! rest ([`NodeStats::record_counters`], [`NodeStats::observe`]); the
//! snapshot reads it ([`NodeStats::read`]). Counters are atomics; the few
//! things that need a lock (history, state tracking) take their own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock;
use crate::cluster::snapshot::NodeState;

/// Upper bounds of the response time buckets, seconds (the last bucket is
/// everything above the last bound).
pub const LATENCY_BOUNDS: [f64; 15] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// One history point every this long ...
pub const HISTORY_STEP: Duration = Duration::from_secs(5);
/// ... and this many of them (5 minutes).
pub const HISTORY_POINTS: usize = 60;

fn relaxed(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// One point of a node's history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// Requests per second this proxy sent to the node over the step.
    pub requests_per_second: f64,
    /// Busy workers in the node's status, if it was fresh then.
    pub busy_workers: Option<u32>,
}

/// The figures of [`NodeStats`] at one moment (part of the node snapshot).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Answers of the node with a 4xx status.
    pub responses_4xx_total: u64,
    /// Answers of the node with a 5xx status.
    pub responses_5xx_total: u64,
    /// Request body bytes this proxy sent to the node.
    pub request_body_bytes_total: u64,
    /// Response body bytes of the node's answers sent to visitors.
    pub response_body_bytes_total: u64,
    /// Most requests this proxy had in flight to the node at once.
    pub peak_inflight: u64,
    /// Median and 99th percentile of the response times the proxy measured
    /// (request received to response sent), seconds; None before any answer.
    /// Read off fixed buckets: the upper bound of the bucket it falls in.
    pub response_time_p50_seconds: Option<f64>,
    pub response_time_p99_seconds: Option<f64>,
    /// Seconds in the current state (as last seen by a scrape or snapshot).
    pub state_seconds: f64,
    /// Times the node went down, and seconds spent down, since start.
    pub times_down: u64,
    pub downtime_seconds: f64,
    /// Oldest first, one every [`HISTORY_STEP`].
    pub history: Vec<HistoryPoint>,
    /// [`NodeStats::accumulated`]: the node's own counters summed across
    /// its restarts while this proxy watched it.
    pub accesses_accumulated_total: u64,
    pub bytes_accumulated_total: u64,
}

#[derive(Debug)]
struct Tracker {
    state: Option<NodeState>,
    since: Instant,
    times_down: u64,
    down_before: Duration,
    history: VecDeque<HistoryPoint>,
    step_started: Instant,
    proxied_at_step: u64,
    /// The node's own counters at the last scrape (to take deltas from).
    last_accesses: Option<u64>,
    last_bytes: Option<u64>,
}

/// Per-node statistics; see the module doc.
#[derive(Debug)]
pub struct NodeStats {
    responses_4xx: AtomicU64,
    responses_5xx: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    peak_inflight: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    accesses_accumulated: AtomicU64,
    bytes_accumulated: AtomicU64,
    tracker: Mutex<Tracker>,
}

impl NodeStats {
    /// `baseline_first`: the node's counters at its first scrape are a
    /// starting point (a node added by a reload) rather than requests
    /// served while this proxy ran (nodes present at start, whose counters
    /// make up the cluster's totals from the first scrape).
    pub fn new(baseline_first: bool) -> NodeStats {
        let now = clock::now();
        NodeStats {
            responses_4xx: AtomicU64::new(0),
            responses_5xx: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            peak_inflight: AtomicU64::new(0),
            latency: Default::default(),
            accesses_accumulated: AtomicU64::new(0),
            bytes_accumulated: AtomicU64::new(0),
            tracker: Mutex::new(Tracker {
                state: None,
                since: now,
                times_down: 0,
                down_before: Duration::ZERO,
                history: VecDeque::with_capacity(HISTORY_POINTS),
                step_started: now,
                proxied_at_step: 0,
                last_accesses: baseline_first.then_some(u64::MAX),
                last_bytes: baseline_first.then_some(u64::MAX),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The proxy answered a visitor with the node's response (`status`),
    /// `took` after receiving the request.
    pub fn record_response(&self, status: u16, took: Duration, body_in: u64, body_out: u64) {
        match status {
            400..=499 => self.responses_4xx.fetch_add(1, Ordering::Relaxed),
            500..=599 => self.responses_5xx.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        self.bytes_in.fetch_add(body_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(body_out, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `inflight` requests are in flight now: keeps the peak.
    pub fn record_inflight(&self, inflight: u64) {
        self.peak_inflight.fetch_max(inflight, Ordering::Relaxed);
    }

    /// A scrape read the node's own counters. A counter that went down
    /// means a restart: its new value is what the node served since.
    pub fn record_counters(&self, accesses: Option<u64>, bytes: Option<u64>) {
        let mut t = self.lock();
        let add = |last: &mut Option<u64>, now: Option<u64>, sum: &AtomicU64| {
            let Some(now) = now else { return };
            let delta = match *last {
                Some(u64::MAX) => 0, // baseline
                Some(prev) if now >= prev => now - prev,
                _ => now,
            };
            sum.fetch_add(delta, Ordering::Relaxed);
            *last = Some(now);
        };
        add(&mut t.last_accesses, accesses, &self.accesses_accumulated);
        add(&mut t.last_bytes, bytes, &self.bytes_accumulated);
    }

    /// Requests and bytes the node served while this proxy watched it (see
    /// [`NodeStats::record_counters`]).
    pub fn accumulated(&self) -> (u64, u64) {
        (
            relaxed(&self.accesses_accumulated),
            relaxed(&self.bytes_accumulated),
        )
    }

    /// The node is in `state` now, with `busy` workers if its status is
    /// fresh and `proxied` requests sent since start: keeps the time in the
    /// state, downtime and the history. Called at each scrape and snapshot.
    pub fn observe(&self, state: NodeState, busy: Option<u32>, proxied: u64, now: Instant) {
        let mut t = self.lock();
        if t.state != Some(state) {
            if t.state == Some(NodeState::Down) {
                let was = now.saturating_duration_since(t.since);
                t.down_before += was;
            }
            if state == NodeState::Down {
                t.times_down += 1;
            }
            t.state = Some(state);
            t.since = now;
        }
        let step = now.saturating_duration_since(t.step_started);
        if step >= HISTORY_STEP {
            let sent = proxied.saturating_sub(t.proxied_at_step);
            let point = HistoryPoint {
                requests_per_second: sent as f64 / step.as_secs_f64(),
                busy_workers: busy,
            };
            // A long pause (no scrape, no snapshot) fills its steps with the
            // average rate, and no worker figure.
            let steps = (step.as_secs_f64() / HISTORY_STEP.as_secs_f64()) as usize;
            for k in 0..steps.min(HISTORY_POINTS) {
                if t.history.len() == HISTORY_POINTS {
                    t.history.pop_front();
                }
                let last = k + 1 == steps.min(HISTORY_POINTS);
                t.history.push_back(HistoryPoint {
                    busy_workers: if last { point.busy_workers } else { None },
                    ..point
                });
            }
            t.step_started = now;
            t.proxied_at_step = proxied;
        }
    }

    /// The figures now.
    pub fn read(&self, now: Instant) -> StatsSnapshot {
        let t = self.lock();
        let in_state = now.saturating_duration_since(t.since);
        let down_now = if t.state == Some(NodeState::Down) {
            in_state
        } else {
            Duration::ZERO
        };
        let buckets: Vec<u64> = self.latency.iter().map(relaxed).collect();
        StatsSnapshot {
            responses_4xx_total: relaxed(&self.responses_4xx),
            responses_5xx_total: relaxed(&self.responses_5xx),
            request_body_bytes_total: relaxed(&self.bytes_in),
            response_body_bytes_total: relaxed(&self.bytes_out),
            peak_inflight: relaxed(&self.peak_inflight),
            response_time_p50_seconds: quantile(&buckets, 0.5),
            response_time_p99_seconds: quantile(&buckets, 0.99),
            state_seconds: in_state.as_secs_f64(),
            times_down: t.times_down,
            downtime_seconds: (t.down_before + down_now).as_secs_f64(),
            history: t.history.iter().copied().collect(),
            accesses_accumulated_total: relaxed(&self.accesses_accumulated),
            bytes_accumulated_total: relaxed(&self.bytes_accumulated),
        }
    }
}

/// The upper bound of the bucket holding the `q` quantile (the last bound
/// for the overflow bucket); None with no observation.
fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(LATENCY_BOUNDS[i.min(LATENCY_BOUNDS.len() - 1)]);
        }
    }
    LATENCY_BOUNDS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_class_bytes_and_quantiles() {
        let s = NodeStats::new(false);
        assert_eq!(s.read(Instant::now()).response_time_p50_seconds, None);
        for _ in 0..98 {
            s.record_response(200, Duration::from_millis(3), 10, 100);
        }
        s.record_response(404, Duration::from_millis(400), 0, 5);
        s.record_response(503, Duration::from_secs(100), 0, 0);
        let r = s.read(Instant::now());
        assert_eq!((r.responses_4xx_total, r.responses_5xx_total), (1, 1));
        assert_eq!(r.request_body_bytes_total, 980);
        assert_eq!(r.response_body_bytes_total, 9805);
        assert_eq!(r.response_time_p50_seconds, Some(0.005));
        assert_eq!(r.response_time_p99_seconds, Some(0.5));
        s.record_inflight(3);
        s.record_inflight(1);
        assert_eq!(s.read(Instant::now()).peak_inflight, 3);
    }

    #[test]
    fn accumulated_counters_never_go_down() {
        let s = NodeStats::new(false);
        s.record_counters(Some(100), Some(1000));
        assert_eq!(s.accumulated(), (100, 1000));
        s.record_counters(Some(150), Some(1500));
        assert_eq!(s.accumulated(), (150, 1500));
        // restarted: its new value is what it served since
        s.record_counters(Some(7), Some(70));
        assert_eq!(s.accumulated(), (157, 1570));
        s.record_counters(None, None);
        assert_eq!(s.accumulated(), (157, 1570));
        // a node added by a reload starts from its first figures
        let added = NodeStats::new(true);
        added.record_counters(Some(5000), Some(1));
        added.record_counters(Some(5010), Some(2));
        assert_eq!(added.accumulated(), (10, 1));
    }

    #[test]
    fn downtime_and_time_in_state() {
        let s = NodeStats::new(false);
        let t0 = Instant::now();
        s.observe(NodeState::Up, Some(1), 0, t0);
        s.observe(NodeState::Down, None, 0, t0 + Duration::from_secs(10));
        s.observe(NodeState::Down, None, 0, t0 + Duration::from_secs(12));
        s.observe(NodeState::Up, Some(1), 0, t0 + Duration::from_secs(15));
        s.observe(NodeState::Down, None, 0, t0 + Duration::from_secs(20));
        let r = s.read(t0 + Duration::from_secs(21));
        assert_eq!(r.times_down, 2);
        assert!((r.downtime_seconds - 6.0).abs() < 1e-6, "{r:?}");
        assert!((r.state_seconds - 1.0).abs() < 1e-6);
    }

    #[test]
    fn history_keeps_the_last_points() {
        let s = NodeStats::new(false);
        let t0 = Instant::now();
        for i in 1..=70u64 {
            s.observe(
                NodeState::Up,
                Some(i as u32),
                i * 50,
                t0 + HISTORY_STEP * i as u32,
            );
        }
        let h = s.read(t0 + HISTORY_STEP * 70).history;
        assert_eq!(h.len(), HISTORY_POINTS);
        assert_eq!(h.last().map(|p| p.busy_workers), Some(Some(70)));
        assert!((h[5].requests_per_second - 10.0).abs() < 1e-9);
    }
}
