//! One node of a group: its configuration plus the live state every other
//! part reads and writes.
//!
//! The live state (`NodeLive`) outlives a reload when the node stays (same
//! group, name and address): in-flight counts, counters, health and the last
//! scraped status carry over. The proxy updates the counters, the scraper
//! records scrapes, the balancer reads `load()`, the admin side reads
//! `snapshot()`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::clock;
use crate::cluster::lend::LendSlot;
use crate::cluster::limit::{self, PageWorkers};
use crate::cluster::queue::GroupQueue;
use crate::cluster::recent::RecentCounter;
use crate::cluster::snapshot::{NodeSnapshot, NodeState};
use crate::cluster::stats::NodeStats;
use crate::config::{GroupConfig, NodeConfig};
use crate::status::rates::{self, Rates, Sample};
use crate::status::StatusReport;

/// A node whose requests have waited this many times its usual response
/// time for a response head, with nothing else heard from it meanwhile, is
/// held back (stalled).
const STALL_FACTOR: u32 = 8;
/// ... but never after less than this.
const STALL_FLOOR: Duration = Duration::from_millis(150);
/// The share of new requests a node in a graceful restart gets (its
/// scoreboard shows workers finishing: `G`).
const GRACEFUL_SHARE: f64 = 0.25;

/// A node that keeps filling up is said to be full in the log at most this
/// often.
const FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Smallest share a node gets while slow start ramps it up.
const SLOW_START_FLOOR: f64 = 0.1;

/// The status page is read over one of the proxy's own connections to a
/// node (`cluster::lend`) only while the node's usual response time is at
/// most this: then a connection comes back within a few milliseconds, well
/// inside a page's freshness, and a node that holds every worker for this
/// proxy is still read in time.
const LEND_WHEN_USUAL_UNDER: Duration = Duration::from_millis(50);

/// Over which connection the last status page was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusConn {
    /// The scraper's own; `kept`: left open for the next read (on a node
    /// where a connection holds a worker, the scraper then holds one
    /// between reads).
    Own { kept: bool },
    /// One of the proxy's connections to the node, which went back to its
    /// pool (`cluster::lend`): the scraper holds no worker. `own_closed`:
    /// the scraper's own connection was closed with this read, and its
    /// worker may not be back at the node's accept yet, so the limit sets
    /// it aside until the next page.
    Visitor { own_closed: bool },
}

/// A node as one configuration generation sees it.
#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    pub live: Arc<NodeLive>,
    /// Set by the operator at run time (`cluster::operator`); kept by
    /// group and node name over reloads.
    pub operator: Arc<crate::cluster::operator::Operator>,
}

/// What the balancer needs to know of a node's load right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Estimated busy workers now, not counting the status request itself.
    pub busy: f64,
    /// Worker capacity, when known from a fresh status.
    pub capacity: Option<u32>,
    /// Requests this proxy has in flight to the node.
    pub inflight: u64,
    /// Requests this proxy sent since the last scrape (or since start when
    /// there is none): breaks ties between equally loaded nodes, so idle
    /// nodes take turns instead of being picked at random.
    pub sent_since_scrape: u64,
    /// Whether `busy` comes from a fresh status; if not, it is only this
    /// proxy's in-flight count.
    pub fresh: bool,
}

/// What this proxy holds of a node against its limit (see
/// [`NodeLive::holding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub limit: Option<u32>,
    pub inflight: u64,
    /// Idle pooled connections that each hold a worker.
    pub idle: u64,
    /// Each connection holds a worker (Apache prefork and worker).
    pub worker_per_connection: bool,
}

/// A usable node as the balancer sees it (see `NodeLive::balance_view`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceView {
    /// Health known good, not merely unknown.
    pub known_up: bool,
    /// Held back: it stopped answering (served only when no other node can).
    pub stalled: bool,
    /// Slow-start factor in (0, 1].
    pub ramp: f64,
    pub load: Load,
}

/// A request waiting for its response head (see [`NodeLive::awaiting_head`]);
/// dropped, it no longer counts.
#[derive(Debug)]
pub struct HeadWait {
    live: Arc<NodeLive>,
    id: u64,
}

impl Drop for HeadWait {
    fn drop(&mut self) {
        self.live.lock().take_waiting(self.id);
    }
}

/// A change of a node's state worth a line in the log: what the caller,
/// which knows the node's group and name, writes.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    /// A warning (the node can take less) or information.
    pub warn: bool,
    pub text: String,
}

impl NodeEvent {
    fn info(text: String) -> NodeEvent {
        NodeEvent { warn: false, text }
    }

    fn warn(text: String) -> NodeEvent {
        NodeEvent { warn: true, text }
    }

    /// Write it to the log with the node's group and name.
    pub fn log(&self, group: &str, node: &str) {
        if self.warn {
            tracing::warn!(group, node, "node {group}/{node} {}", self.text);
        } else {
            tracing::info!(group, node, "node {group}/{node} {}", self.text);
        }
    }
}

/// A duration as a log line says it: whole seconds (milliseconds under one).
fn lasted(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// Active health as the scrapes see it (HAProxy's rise/fall).
#[derive(Debug, Clone, PartialEq)]
enum Health {
    Unknown,
    Up,
    Down { reason: String },
}

/// Live state of a node, shared across config generations.
#[derive(Debug)]
pub struct NodeLive {
    inflight: AtomicU64,
    proxied: AtomicU64,
    errors: AtomicU64,
    recent: RecentCounter,
    /// Idle pooled keep-alive connections to the node (`proxy::pool`).
    idle_pooled: AtomicU64,
    /// The queue of the node's group, told when a slot at the node frees
    /// (`cluster::queue`). Set once: a node keeps its live state only in a
    /// group of the same name, whose queue goes on with it.
    queue: OnceLock<Weak<GroupQueue>>,
    /// Answers, times, bytes, history and downtime (`cluster/stats.rs`).
    pub stats: NodeStats,
    /// A connection given back by a request, for the scraper waiting for
    /// one (`cluster::lend`).
    pub lend: LendSlot,
    state: Mutex<LiveState>,
}

#[derive(Debug)]
struct LiveState {
    health: Health,
    /// Since when the node has had its current health.
    health_since: Instant,
    /// The last status said no worker was idle.
    full: bool,
    /// Requests sent whose response head has not come yet, by number:
    /// when each was sent.
    /// (In the order they were sent, so the oldest is first; a deque that
    /// keeps its memory, so a request costs no allocation.)
    waiting: VecDeque<(u64, Instant)>,
    next_wait: u64,
    /// When a response head, or a status page, last came from the node.
    last_heard: Option<Instant>,
    /// The usual time to a response head (moving average).
    usual_head: Option<Duration>,
    /// Held back: the node stopped answering (why), until it answers again.
    stalled: Option<String>,
    /// Since when the node looks stalled, its status page asked to prove
    /// otherwise (`probe_wanted`, for the scraper to take).
    suspect_since: Option<Instant>,
    probe_wanted: bool,
    /// When "full" was last written to the log, and whether its end is
    /// still to be (a node on the edge of full would fill the log).
    full_logged_at: Option<Instant>,
    full_announced: bool,
    ok_streak: u32,
    fail_streak: u32,
    /// Slow start runs from here, when set.
    ramp_from: Option<Instant>,
    // passive health (nginx's max_fails / fail_timeout)
    passive_fails: u32,
    passive_window_start: Option<Instant>,
    passive_down_until: Option<Instant>,
    passive_reason: Option<String>,
    // scraping
    last: Option<Sample>,
    rates: Option<Rates>,
    inflight_at_scrape: u64,
    /// Idle pooled connections when the last status was read.
    idle_at_scrape: u64,
    /// Requests in flight and idle pooled connections when the scrape now
    /// running (or the last one) was sent.
    held_before_scrape: (u64, u64),
    /// The most of each this proxy held while the last page was asked for
    /// and read (its moment of making is in between): what the limit takes
    /// as held, so that requests that ended during the scrape are not taken
    /// for others' load.
    held_during_scrape: (u64, u64),
    proxied_at_scrape: u64,
    scrapes: u64,
    scrape_failures: u64,
    last_scrape_duration: Option<Duration>,
    last_error: Option<String>,
    /// Over which connection the last page was read.
    status_conn: StatusConn,
}

impl NodeLive {
    /// Fresh state for a node seen for the first time. `added_by_reload`
    /// nodes ramp up through slow start once they are first seen healthy.
    pub fn new(added_by_reload: bool) -> NodeLive {
        let now = clock::now();
        NodeLive {
            inflight: AtomicU64::new(0),
            proxied: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            recent: RecentCounter::new(),
            idle_pooled: AtomicU64::new(0),
            queue: OnceLock::new(),
            stats: NodeStats::new(added_by_reload),
            lend: LendSlot::default(),
            state: Mutex::new(LiveState {
                health: Health::Unknown,
                health_since: now,
                full: false,
                waiting: VecDeque::new(),
                next_wait: 0,
                last_heard: None,
                usual_head: None,
                stalled: None,
                suspect_since: None,
                probe_wanted: false,
                full_logged_at: None,
                full_announced: false,
                ok_streak: 0,
                fail_streak: 0,
                ramp_from: added_by_reload.then_some(now),
                passive_fails: 0,
                passive_window_start: None,
                passive_down_until: None,
                passive_reason: None,
                last: None,
                rates: None,
                inflight_at_scrape: 0,
                idle_at_scrape: 0,
                held_before_scrape: (0, 0),
                held_during_scrape: (0, 0),
                proxied_at_scrape: 0,
                scrapes: 0,
                scrape_failures: 0,
                last_scrape_duration: None,
                last_error: None,
                status_conn: StatusConn::Own { kept: false },
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LiveState> {
        // A panic while holding this lock cannot leave the plain data in a
        // state worse than stale, so a poisoned lock is still used.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- counters the proxy keeps ------------------------------------------

    /// A request was sent to this node; the returned guard counts it in
    /// flight until dropped.
    pub fn begin_request(self: &Arc<Self>) -> InflightGuard {
        let inflight = self.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.record_inflight(inflight);
        self.proxied.fetch_add(1, Ordering::Relaxed);
        self.recent.add(1);
        InflightGuard(Arc::clone(self))
    }

    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// A status page is read over one of this proxy's connections to the
    /// node (`cluster::lend`): counted in flight like a request (it takes
    /// the connection's worker) until the guard is dropped, but not as a
    /// request proxied.
    pub fn begin_status_read(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(Arc::clone(self))
    }

    /// Set the node's usual response time.
    #[cfg(test)]
    pub fn set_usual_head_for_test(&self, usual: Duration) {
        self.lock().usual_head = Some(usual);
    }

    /// Change the in-flight count by `-n` without telling the queue (room
    /// that comes without a slot given back, as when a status goes stale).
    #[cfg(test)]
    pub fn uncount_for_test(&self, n: i64) {
        if n >= 0 {
            self.inflight.fetch_sub(n as u64, Ordering::Relaxed);
        } else {
            self.inflight.fetch_add((-n) as u64, Ordering::Relaxed);
        }
    }

    /// An idle pooled connection to the node: counted until the returned
    /// hold is dropped.
    pub fn hold_idle(self: &Arc<Self>) -> IdleHold {
        self.idle_pooled.fetch_add(1, Ordering::Relaxed);
        IdleHold(Arc::clone(self))
    }

    /// Idle pooled connections to the node now.
    pub fn idle_pooled(&self) -> u64 {
        self.idle_pooled.load(Ordering::Relaxed)
    }

    /// Tell the node's group queue about it (the cluster does, as it builds
    /// a state).
    pub fn set_queue(&self, queue: &Arc<GroupQueue>) {
        // Already set (the node stayed over a reload): to the same queue.
        let _ = self.queue.set(Arc::downgrade(queue));
    }

    /// Room may have come at the node: its group's queue hands it on.
    /// Whether requests wait in the node's group queue now (they want more
    /// of the nodes than their limits give: `cluster::limit`).
    fn wanting(&self) -> bool {
        self.queue
            .get()
            .and_then(Weak::upgrade)
            .is_some_and(|q| q.waiting() > 0)
    }

    pub fn room_freed(&self) {
        if let Some(q) = self.queue.get().and_then(Weak::upgrade) {
            q.dispatch();
        }
    }

    pub fn proxied(&self) -> u64 {
        self.proxied.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Requests sent over the last minute.
    pub fn recent_requests(&self) -> u64 {
        self.recent.sum()
    }

    /// A request to the node failed (connect error, timeout): counts towards
    /// passive health.
    pub fn record_failure(&self, group: &GroupConfig, reason: &str) -> Option<NodeEvent> {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if group.max_fails == 0 {
            return None;
        }
        let now = clock::now();
        let mut s = self.lock();
        let window_open = s
            .passive_window_start
            .is_some_and(|t| now.duration_since(t) < group.fail_timeout);
        if !window_open {
            s.passive_window_start = Some(now);
            s.passive_fails = 0;
        }
        s.passive_fails += 1;
        if s.passive_fails >= group.max_fails {
            s.passive_down_until = Some(now + group.fail_timeout);
            let why = format!(
                "{} failed request(s) within {:?}: {reason}",
                s.passive_fails, group.fail_timeout
            );
            s.passive_reason = Some(why.clone());
            s.passive_fails = 0;
            s.passive_window_start = None;
            return Some(NodeEvent::warn(format!(
                "taken out for {} (max_fails): {why}",
                lasted(group.fail_timeout)
            )));
        }
        None
    }

    /// A request was sent to the node and waits for its response head: the
    /// wait counts (see [`NodeLive::check_stall`]) until the returned guard
    /// is given to [`NodeLive::record_head`] or dropped.
    pub fn awaiting_head(self: &Arc<Self>) -> HeadWait {
        let mut s = self.lock();
        let id = s.next_wait;
        s.next_wait += 1;
        s.waiting.push_back((id, clock::now()));
        HeadWait {
            live: Arc::clone(self),
            id,
        }
    }

    /// The response head of the request `wait` came: the node answers (its
    /// passive failure count starts again, a hold-back ends), and how long
    /// it took feeds its usual response time.
    pub fn record_head(&self, wait: HeadWait) -> Option<NodeEvent> {
        let now = clock::now();
        let mut s = self.lock();
        s.passive_fails = 0;
        s.passive_window_start = None;
        if let Some(sent) = s.take_waiting(wait.id) {
            let took = now.duration_since(sent);
            s.usual_head = Some(match s.usual_head {
                None => took,
                // An eighth of the new sample: a moving average over about
                // the last eight responses.
                Some(usual) => usual - usual / 8 + took / 8,
            });
        }
        s.last_heard = Some(now);
        s.stalled
            .take()
            .map(|_| NodeEvent::info("answers again: no longer held back".into()))
    }

    /// Hold the node back at once if its requests stopped producing
    /// response heads: the oldest has waited [`STALL_FACTOR`] times its usual
    /// time (at least [`STALL_FLOOR`]) and nothing was heard from the node
    /// (a response head, its status page) for as long. A frozen node
    /// (SIGSTOP, a hung disk: the kernel still accepts connections) is then
    /// left alone within a fraction of a second, not after several failed
    /// status checks. Called by the scraper every few tens of milliseconds.
    ///
    /// Where the node's status page is read (`probe`), silence is first
    /// only a suspicion: the page is read at once ([`Self::take_probe`]),
    /// and the node is held back only if nothing is heard for as long
    /// again. A node that is just slow (requests longer than the threshold,
    /// no other traffic to hear from it between two scheduled reads)
    /// answers the read and is left alone.
    pub fn check_stall(&self, now: Instant, probe: bool) -> Option<NodeEvent> {
        let mut s = self.lock();
        if s.stalled.is_some() {
            s.suspect_since = None;
            return None;
        }
        let Some(&(_, oldest)) = s.waiting.front() else {
            s.suspect_since = None;
            return None;
        };
        let threshold = s
            .usual_head
            .map_or(STALL_FLOOR, |u| (u * STALL_FACTOR).max(STALL_FLOOR));
        let waited = now.duration_since(oldest);
        let silent = s
            .last_heard
            .is_none_or(|t| now.duration_since(t) >= threshold);
        if waited < threshold || !silent {
            s.suspect_since = None;
            return None;
        }
        if probe {
            match s.suspect_since {
                None => {
                    s.suspect_since = Some(now);
                    s.probe_wanted = true;
                    return None;
                }
                Some(since) if now.duration_since(since) < threshold => return None,
                Some(_) => s.suspect_since = None,
            }
        }
        let usual = s.usual_head.map_or(String::from("unknown"), |u| {
            format!("{:.1}ms", u.as_secs_f64() * 1000.0)
        });
        let why = format!(
            "no response head for {}ms (usual {usual}), {} request(s) waiting",
            waited.as_millis(),
            s.waiting.len()
        );
        s.stalled = Some(why.clone());
        Some(NodeEvent::warn(format!("is held back: {why}")))
    }

    /// Whether [`Self::check_stall`] wants the status page read now (taken
    /// once).
    pub fn take_probe(&self) -> bool {
        std::mem::take(&mut self.lock().probe_wanted)
    }

    // ---- scrapes -----------------------------------------------------------

    /// A scrape is sent now: what this proxy holds of the node is noted (see
    /// `held_during_scrape`).
    pub fn scrape_sent(&self) {
        let held = (self.inflight(), self.idle_pooled());
        self.lock().held_before_scrape = held;
    }

    /// Whether the next page should be read over one of this proxy's
    /// connections to the node (`cluster::lend`), and how long to wait for
    /// one to come back: the node holds a worker per connection, this proxy
    /// holds connections to it that it pools, its requests there are short
    /// (they come back well within a page's freshness: twice the usual
    /// response time and 10 ms is the wait), and it answers. None: the
    /// scraper's own connection.
    ///
    /// `Some(ZERO)`: the hand-over with no wait, where a new connection of
    /// the scraper's could find every worker taken by this proxy's requests
    /// and wait in the node's accept backlog (over its workers): the
    /// scraper's worker is set aside at once, and the page is read over a
    /// new connection of its own only if a worker is free for it, else over
    /// an idle pooled connection or the next one a request gives back
    /// (`status::scraper`). That is the case when requests stopped being
    /// short with no kept connection of the scraper's (the last page was
    /// read over a visitor's connection, or the one before could not be
    /// read), and for a `probe` (the node looks stalled:
    /// [`Self::check_stall`]): while this proxy's requests hold every
    /// worker, a connection of the scraper's could not be answered before
    /// one of them ends anyway. A node held back, down or not checked yet
    /// is read over the scraper's own connection.
    pub fn status_over_visitor_conn(&self, probe: bool) -> Option<Duration> {
        let pooled = self.lend.pooled_since() || self.idle_pooled() > 0;
        let holds = self.inflight() + self.idle_pooled() > 0;
        let s = self.lock();
        if !holds || !s.worker_per_connection() {
            return None;
        }
        if probe {
            return Some(Duration::ZERO);
        }
        if s.stalled.is_some() || !matches!(s.health, Health::Up) {
            return None;
        }
        match s.usual_head.filter(|&u| u <= LEND_WHEN_USUAL_UNDER) {
            Some(usual) if pooled => Some(usual * 2 + Duration::from_millis(10)),
            // The scraper's kept connection holds a worker for the read.
            _ if s.status_conn == (StatusConn::Own { kept: true }) => None,
            _ => Some(Duration::ZERO),
        }
    }

    /// The next page is read over the scraper's own connection after one
    /// read over a visitor's: the node's limit sets a worker aside for it
    /// again from now on, so that a connection this proxy holds over the
    /// new limit is closed and its worker takes the scraper's.
    pub fn reserve_status_worker(&self) {
        let mut s = self.lock();
        if matches!(s.status_conn, StatusConn::Visitor { .. }) {
            s.status_conn = StatusConn::Own { kept: false };
        }
    }

    /// Record a successful scrape, read over `conn`.
    pub fn record_scrape(
        &self,
        group: &GroupConfig,
        report: StatusReport,
        took: Duration,
        conn: StatusConn,
    ) -> Vec<NodeEvent> {
        let mut events = Vec::new();
        let now = clock::now();
        let full = report.idle_workers == Some(0)
            || report
                .capacity(None)
                .is_some_and(|c| report.busy_workers >= c && c > 0);
        let (busy, capacity) = (report.busy_workers, report.capacity(None));
        let inflight = self.inflight();
        self.stats
            .record_counters(report.total_accesses, report.total_bytes());
        let mut s = self.lock();
        s.scrapes += 1;
        s.last_scrape_duration = Some(took);
        s.last_error = None;
        s.status_conn = conn;
        let sample = Sample { at: now, report };
        s.rates = s
            .last
            .as_ref()
            .and_then(|prev| rates::between(prev, &sample));
        s.last = Some(sample);
        s.inflight_at_scrape = inflight;
        s.idle_at_scrape = self.idle_pooled();
        s.held_during_scrape = (
            s.held_before_scrape.0.max(inflight),
            s.held_before_scrape.1.max(s.idle_at_scrape),
        );
        s.proxied_at_scrape = self.proxied();
        s.fail_streak = 0;
        s.ok_streak = s.ok_streak.saturating_add(1);
        s.last_heard = Some(now);
        if s.stalled.take().is_some() {
            events.push(NodeEvent::info(
                "answers its status page again: no longer held back".into(),
            ));
        }
        match s.health {
            Health::Unknown => {
                s.health = Health::Up;
                s.health_since = now;
                events.push(NodeEvent::info("is up (first status read)".into()));
            }
            Health::Down { .. } if s.ok_streak >= group.scrape.rise => {
                let down_for = now.duration_since(s.health_since);
                s.health = Health::Up;
                s.health_since = now;
                s.ramp_from = Some(now);
                let ramp = if group.slow_start.is_zero() {
                    String::new()
                } else {
                    format!("; slow start over {}", lasted(group.slow_start))
                };
                events.push(NodeEvent::info(format!(
                    "is back up after {} down ({} good status checks){ramp}",
                    lasted(down_for),
                    s.ok_streak
                )));
            }
            _ => {}
        }
        if let Some(from) = s.ramp_from {
            if now.duration_since(from) >= group.slow_start {
                s.ramp_from = None;
                if !group.slow_start.is_zero() {
                    events.push(NodeEvent::info("ended its slow start".into()));
                }
            }
        }
        if full != s.full {
            s.full = full;
            let quiet = s
                .full_logged_at
                .is_some_and(|t| now.duration_since(t) < FULL_LOG_EVERY);
            if full && !quiet {
                s.full_logged_at = Some(now);
                s.full_announced = true;
                let of = capacity.map_or(String::new(), |c| format!(" of {c}"));
                events.push(NodeEvent::warn(format!(
                    "is full: {busy}{of} workers busy, none idle"
                )));
            } else if !full && s.full_announced {
                s.full_announced = false;
                events.push(NodeEvent::info("has idle workers again".into()));
            }
        }
        events
    }

    /// Record a failed scrape with its reason in words.
    pub fn record_scrape_failure(
        &self,
        group: &GroupConfig,
        reason: String,
        took: Duration,
        timed_out: bool,
    ) -> Option<NodeEvent> {
        let now = clock::now();
        let mut event = None;
        let mut s = self.lock();
        if timed_out && s.stalled.is_none() && !matches!(s.health, Health::Down { .. }) {
            // A status page that stops answering in time holds the node back
            // at once; `fall` failures in a row still mark it down.
            let why = format!("its status page did not answer: {reason}");
            event = Some(NodeEvent::warn(format!("is held back: {why}")));
            s.stalled = Some(why);
        }
        s.scrapes += 1;
        s.scrape_failures += 1;
        s.last_scrape_duration = Some(took);
        s.ok_streak = 0;
        s.fail_streak = s.fail_streak.saturating_add(1);
        if s.fail_streak >= group.scrape.fall && !matches!(s.health, Health::Down { .. }) {
            let why = format!("{} status checks failed in a row: {reason}", s.fail_streak);
            let was = match s.health {
                Health::Up => format!(" after {} up", lasted(now.duration_since(s.health_since))),
                _ => String::new(),
            };
            event = Some(NodeEvent::warn(format!("is down{was}: {why}")));
            s.stalled = None;
            s.health = Health::Down { reason: why };
            s.health_since = now;
            s.full = false;
        }
        s.last_error = Some(reason);
        event
    }

    // ---- what the balancer reads -------------------------------------------

    /// Whether the node may get a new request now.
    pub fn usable(&self, now: Instant) -> bool {
        let s = self.lock();
        !matches!(s.health, Health::Down { .. }) && !s.passive_down(now) && s.stalled.is_none()
    }

    /// Whether the node holds a worker per connection (see
    /// [`NodeLive::worker_node_load`]).
    #[cfg(test)]
    pub fn worker_per_connection(&self) -> bool {
        self.lock().worker_per_connection()
    }

    /// The node's [`NodeLive::load`] if each connection open to it, idle
    /// keep-alive ones included, holds one of its workers (Apache prefork
    /// and worker MPMs), as far as the last status page tells; None for
    /// other nodes. Read under one lock. The proxy keeps few idle
    /// connections to such nodes: they hold workers other clients wait
    /// for, and make the node look busier than it is.
    pub fn worker_node_load(
        &self,
        group: &GroupConfig,
        node: &NodeConfig,
        now: Instant,
    ) -> Option<Load> {
        let s = self.lock();
        s.worker_per_connection()
            .then(|| self.load_locked(&s, group, node, now))
    }

    /// How many requests this proxy may have at the node at once now
    /// (`cluster::limit`): None when there is no limit.
    pub fn limit(&self, group: &GroupConfig, node: &NodeConfig, now: Instant) -> Option<u32> {
        let s = self.lock();
        s.limit(group, node, now, || self.wanting())
    }

    /// Whether one more request fits under the node's limit now.
    pub fn has_room(&self, group: &GroupConfig, node: &NodeConfig, now: Instant) -> bool {
        let s = self.lock();
        let limit = s.limit(group, node, now, || self.wanting());
        limit::has_room(limit, self.inflight(), s.held_idle(self.idle_pooled()))
    }

    /// The limit, the requests in flight and the idle pooled connections
    /// that hold a worker (0 on a node where connections hold none), under
    /// one lock: what `proxy::pool_for` decides by.
    pub fn holding(&self, group: &GroupConfig, node: &NodeConfig, now: Instant) -> Holding {
        let s = self.lock();
        Holding {
            limit: s.limit(group, node, now, || self.wanting()),
            inflight: self.inflight(),
            idle: s.held_idle(self.idle_pooled()),
            worker_per_connection: s.worker_per_connection(),
        }
    }

    /// The node's load now: the last fresh scrape corrected by what this
    /// proxy sent since, or this proxy's own in-flight count when the status
    /// is stale or not scraped.
    pub fn load(&self, group: &GroupConfig, node: &NodeConfig, now: Instant) -> Load {
        let s = self.lock();
        self.load_locked(&s, group, node, now)
    }

    /// Everything the balancer needs of a usable node, under one lock:
    /// None when the node is down; else whether its health is known good,
    /// its slow-start factor and its load.
    pub fn balance_view(
        &self,
        group: &GroupConfig,
        node: &NodeConfig,
        now: Instant,
    ) -> Option<BalanceView> {
        let s = self.lock();
        if matches!(s.health, Health::Down { .. }) || s.passive_down(now) {
            return None;
        }
        let graceful = s
            .fresh(group, now)
            .and_then(|f| f.report.scoreboard.as_deref())
            .is_some_and(|b| b.contains('G'));
        let share = if graceful { GRACEFUL_SHARE } else { 1.0 };
        Some(BalanceView {
            known_up: matches!(s.health, Health::Up),
            stalled: s.stalled.is_some(),
            ramp: ramp_factor(s.ramp_from, group.slow_start, now) * share,
            load: self.load_locked(&s, group, node, now),
        })
    }

    fn load_locked(
        &self,
        s: &LiveState,
        group: &GroupConfig,
        node: &NodeConfig,
        now: Instant,
    ) -> Load {
        let inflight = self.inflight();
        let sent_since_scrape = self.proxied().saturating_sub(s.proxied_at_scrape);
        match s.fresh(group, now) {
            Some(sample) => {
                let r = &sample.report;
                let (freed, scraper) = status_worker(r, s.status_conn);
                let scraped = f64::from(r.busy_workers.saturating_sub(freed));
                let since = inflight as f64 - s.inflight_at_scrape as f64;
                // Whatever the page showed, each request in flight holds a
                // worker (or waits for one), and so may the scraper.
                let floor = (inflight + u64::from(scraper)) as f64;
                Load {
                    busy: (scraped + since).max(floor),
                    capacity: r.capacity(node.max_workers),
                    inflight,
                    sent_since_scrape,
                    fresh: true,
                }
            }
            None => Load {
                busy: inflight as f64,
                capacity: None,
                inflight,
                sent_since_scrape,
                fresh: false,
            },
        }
    }

    // ---- what the admin side reads -----------------------------------------

    /// Render the live state as plain data.
    pub fn snapshot(
        &self,
        group: &GroupConfig,
        node: &NodeConfig,
        group_recent: u64,
        now: Instant,
    ) -> NodeSnapshot {
        let s = self.lock();
        let load = self.load_locked(&s, group, node, now);
        let ramp = ramp_factor(s.ramp_from, group.slow_start, now);
        let fresh = s.fresh(group, now).is_some();
        let state = self.observe_locked(&s, group, node, now);
        let down_reason = match &s.health {
            Health::Down { reason } => Some(reason.clone()),
            _ if s.passive_down(now) => s.passive_reason.clone(),
            _ => s.stalled.as_ref().map(|why| format!("held back: {why}")),
        };
        let report = s.last.as_ref().map(|l| &l.report);
        let recent = self.recent_requests();
        NodeSnapshot {
            name: node.name.clone(),
            address: node.address.to_string(),
            status_url: node.status.url.clone(),
            state,
            backup: node.backup,
            weight: node.weight,
            effective_weight: f64::from(node.weight) * ramp,
            server_kind: report.map(|r| r.kind.name().to_string()),
            server_version: report.and_then(|r| r.server_version.clone()),
            mpm: report.and_then(|r| r.mpm.clone()),
            node_uptime_seconds: report.and_then(|r| r.uptime_seconds),
            busy_workers: report.map(|r| r.busy_workers),
            idle_workers: report.and_then(|r| r.idle_workers),
            capacity: report.and_then(|r| r.capacity(node.max_workers)),
            estimated_busy: load.busy,
            limit: s.limit(group, node, now, || self.wanting()),
            idle_pooled: self.idle_pooled(),
            scoreboard: report.and_then(|r| r.scoreboard.clone()),
            node_accesses_total: report.and_then(|r| r.total_accesses),
            node_bytes_total: report.and_then(|r| r.total_bytes()),
            requests_per_second: s.rates.map(|r| r.requests_per_second),
            bytes_per_second: s.rates.and_then(|r| r.bytes_per_second),
            cpu_load: report.and_then(|r| r.cpu_load),
            load1: report.and_then(|r| r.load1),
            inflight: load.inflight,
            proxied_total: self.proxied(),
            share_last_minute: if group_recent == 0 {
                0.0
            } else {
                recent as f64 / group_recent as f64
            },
            errors_total: self.errors(),
            scrapes_total: s.scrapes,
            scrape_failures_total: s.scrape_failures,
            last_scrape_age_seconds: s.last.as_ref().map(|l| (now - l.at).as_secs_f64()),
            last_scrape_duration_seconds: s.last_scrape_duration.map(|d| d.as_secs_f64()),
            last_scrape_error: s.last_error.clone(),
            down_reason,
            status_fresh: fresh && state != NodeState::Down,
            stats: self.stats.read(now),
            operator_state: Default::default(),
            operator_weight: None,
        }
    }

    /// Keep the node's time in state, downtime and history current (the
    /// scraper calls this on each of its passes over the nodes).
    pub fn observe(&self, group: &GroupConfig, node: &NodeConfig, now: Instant) {
        let s = self.lock();
        self.observe_locked(&s, group, node, now);
    }

    /// [`NodeLive::observe`] under a lock already held: the node's state.
    fn observe_locked(
        &self,
        s: &LiveState,
        group: &GroupConfig,
        node: &NodeConfig,
        now: Instant,
    ) -> NodeState {
        let state = s.state(group, node, now);
        let busy = s.fresh(group, now).map(|l| l.report.busy_workers);
        self.stats.observe(state, busy, self.proxied(), now);
        state
    }
}

impl LiveState {
    /// See [`NodeLive::limit`].
    fn limit(
        &self,
        group: &GroupConfig,
        node: &NodeConfig,
        now: Instant,
        wanting: impl FnOnce() -> bool,
    ) -> Option<u32> {
        // A stale page still bounds the node (`cluster::limit`).
        let last = self.last.as_ref().filter(|_| group.scrape.enabled);
        let stale = self.fresh(group, now).is_none();
        let page = last.and_then(|sample| {
            let r = &sample.report;
            // Only a page that counts workers (Apache's scoreboard; not
            // nginx's connections) bounds what a node can take.
            r.idle_workers?;
            let capacity = r.capacity(node.max_workers)?;
            let per_connection = holds_worker_per_connection(r);
            let (inflight, idle) = self.held_during_scrape;
            let idle = if per_connection { idle } else { 0 };
            Some(PageWorkers {
                capacity,
                busy: r.busy_workers,
                // Apache counts the status request's worker busy; read over
                // a visitor's connection, that worker is this proxy's own
                // (counted in held) and none is set aside for the next read.
                status: u32::from(!matches!(
                    self.status_conn,
                    StatusConn::Visitor { own_closed: false }
                )),
                held_at_scrape: inflight + idle,
                wanting: false,
                stale,
            })
        });
        // Whether requests wait in the queue is read only where it counts
        // (it is not free: the queue is behind a weak reference).
        let page = page.map(|p| PageWorkers {
            wanting: limit::depends_on_wanting(&p) && wanting(),
            ..p
        });
        limit::limit(page, node.max_conns)
    }

    /// The idle pooled connections that hold one of the node's workers.
    fn held_idle(&self, idle: u64) -> u64 {
        if self.worker_per_connection() {
            idle
        } else {
            0
        }
    }

    /// Take the request `id` out of those waiting for a response head:
    /// when it was sent. Requests mostly end in the order they were sent,
    /// so it is found near the front.
    fn take_waiting(&mut self, id: u64) -> Option<Instant> {
        let at = self.waiting.iter().position(|&(i, _)| i == id)?;
        self.waiting.remove(at).map(|(_, sent)| sent)
    }

    fn worker_per_connection(&self) -> bool {
        self.last
            .as_ref()
            .is_some_and(|l| holds_worker_per_connection(&l.report))
    }

    /// The state the page shows: draining, down, unknown, stale, full
    /// (a fresh status with no idle worker) or up.
    fn state(&self, group: &GroupConfig, node: &NodeConfig, now: Instant) -> NodeState {
        if node.drain {
            NodeState::Draining
        } else if matches!(self.health, Health::Down { .. })
            || self.passive_down(now)
            || self.stalled.is_some()
        {
            NodeState::Down
        } else if !group.scrape.enabled {
            NodeState::Up
        } else if matches!(self.health, Health::Unknown) {
            NodeState::Unknown
        } else if self.fresh(group, now).is_none() {
            NodeState::Stale
        } else if self.full {
            NodeState::Full
        } else {
            NodeState::Up
        }
    }

    fn passive_down(&self, now: Instant) -> bool {
        self.passive_down_until.is_some_and(|t| now < t)
    }

    /// The last scrape, if it is recent enough to balance by.
    fn fresh(&self, group: &GroupConfig, now: Instant) -> Option<&Sample> {
        if !group.scrape.enabled {
            return None;
        }
        let max_age = group.scrape.interval * group.scrape.stale_after;
        self.last
            .as_ref()
            .filter(|l| now.saturating_duration_since(l.at) <= max_age)
    }
}

/// See [`NodeLive::worker_node_load`]; the page's kind decides
/// ([`crate::status::StatusPage::worker_per_connection`]).
fn holds_worker_per_connection(report: &StatusReport) -> bool {
    report.kind.page().worker_per_connection(report)
}

/// Of the status request's worker, which Apache and nginx both count busy
/// on the page: (whether it is free again after the read, whether the
/// scraper still holds it). Over the scraper's own connection kept open to
/// a node where a connection holds a worker, that worker stays taken (by
/// the scraper, between scrapes) and is not free for anyone else; over a
/// visitor's connection it was counted as one of this proxy's requests in
/// flight, whose end the load's correction since the scrape already takes
/// off.
fn status_worker(report: &StatusReport, conn: StatusConn) -> (u32, u32) {
    match conn {
        StatusConn::Own { kept: true } if holds_worker_per_connection(report) => (0, 1),
        StatusConn::Own { .. } => (1, 0),
        StatusConn::Visitor { .. } => (0, 0),
    }
}

/// Linear ramp from `SLOW_START_FLOOR` to 1 over `slow_start` since `from`.
fn ramp_factor(from: Option<Instant>, slow_start: Duration, now: Instant) -> f64 {
    match from {
        Some(from) if !slow_start.is_zero() => {
            let f = now.saturating_duration_since(from).as_secs_f64() / slow_start.as_secs_f64();
            f.clamp(SLOW_START_FLOOR, 1.0)
        }
        _ => 1.0,
    }
}

/// Counts one request in flight to a node until dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<NodeLive>);

impl InflightGuard {
    pub fn node(&self) -> &Arc<NodeLive> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        // Its slot is free: the oldest request that may go here goes.
        self.0.room_freed();
    }
}

/// Counts one idle pooled connection to a node until dropped (the
/// connection closed or taken for a request).
#[derive(Debug)]
pub struct IdleHold(Arc<NodeLive>);

impl Drop for IdleHold {
    fn drop(&mut self) {
        self.0.idle_pooled.fetch_sub(1, Ordering::Relaxed);
        self.0.room_freed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_is_linear_with_a_floor() {
        let t0 = Instant::now();
        let ss = Duration::from_secs(10);
        assert_eq!(ramp_factor(None, ss, t0), 1.0);
        assert_eq!(ramp_factor(Some(t0), Duration::ZERO, t0), 1.0);
        assert_eq!(ramp_factor(Some(t0), ss, t0), SLOW_START_FLOOR);
        let half = ramp_factor(Some(t0), ss, t0 + Duration::from_secs(5));
        assert!((half - 0.5).abs() < 1e-9);
        assert_eq!(ramp_factor(Some(t0), ss, t0 + Duration::from_secs(60)), 1.0);
    }

    #[test]
    fn a_node_whose_requests_stop_being_answered_is_held_back_until_it_answers() {
        let cfg = config();
        let (group, node) = (&cfg.groups[0], &cfg.groups[0].nodes[0]);
        let live = Arc::new(NodeLive::new(false));
        let t0 = Instant::now();
        // Answered in no time: usual is about 0; the floor applies.
        let w = live.awaiting_head();
        assert_eq!(live.record_head(w), None);
        let waiting = live.awaiting_head();
        assert_eq!(
            live.check_stall(t0 + STALL_FLOOR / 2, false),
            None,
            "not yet"
        );
        let later = Instant::now() + STALL_FLOOR * 2;
        let event = live.check_stall(later, false).expect("held back");
        assert!(
            event.warn && event.text.contains("1 request(s) waiting"),
            "{event:?}"
        );
        assert!(!live.usable(later));
        assert!(live
            .balance_view(group, node, later)
            .is_some_and(|v| v.stalled));
        assert_eq!(live.check_stall(later, false), None, "said once");
        // It answers: taken back.
        let back = live.record_head(waiting).expect("taken back");
        assert!(!back.warn, "{back:?}");
        assert!(live.usable(Instant::now()));
        // A wait dropped (the request failed) no longer counts.
        drop(live.awaiting_head());
        assert_eq!(
            live.check_stall(Instant::now() + STALL_FLOOR * 4, false),
            None
        );
    }

    #[test]
    fn a_silent_node_whose_status_page_answers_is_not_held_back() {
        let cfg = config();
        let group = &cfg.groups[0];
        let live = Arc::new(NodeLive::new(false));
        let w = live.awaiting_head();
        assert_eq!(live.record_head(w), None);
        let _slow = live.awaiting_head();
        // Silent past the threshold: a suspicion, the page is to be read.
        let t1 = Instant::now() + STALL_FLOOR * 2;
        assert_eq!(live.check_stall(t1, true), None, "not held back yet");
        assert!(live.take_probe(), "the page is read at once");
        assert!(!live.take_probe(), "asked once");
        assert_eq!(live.check_stall(t1 + STALL_FLOOR / 2, true), None);
        // It answers: no suspicion left, however long the request takes.
        live.record_scrape(
            group,
            report(Some("prefork"), 2, 8),
            Duration::ZERO,
            StatusConn::Own { kept: true },
        );
        assert_eq!(
            live.check_stall(Instant::now() + STALL_FLOOR / 2, true),
            None
        );
        assert!(live.usable(Instant::now()));
        // Silent again, and the page does not answer: held back once the
        // read had as long as the threshold.
        let t2 = Instant::now() + STALL_FLOOR * 2;
        assert_eq!(live.check_stall(t2, true), None);
        assert!(live.take_probe());
        let event = live
            .check_stall(t2 + STALL_FLOOR, true)
            .expect("held back when the read is not answered either");
        assert!(event.warn, "{event:?}");
        assert!(!live.usable(t2 + STALL_FLOOR));
    }

    #[test]
    fn a_status_page_that_times_out_holds_the_node_back_at_once() {
        let cfg = config();
        let group = &cfg.groups[0];
        let live = NodeLive::new(false);
        live.record_scrape(
            group,
            report(Some("event"), 1, 8),
            Duration::ZERO,
            StatusConn::Own { kept: true },
        );
        let e = live
            .record_scrape_failure(group, "no answer within 1s".into(), Duration::ZERO, true)
            .expect("held back");
        assert!(e.text.starts_with("is held back"), "{e:?}");
        assert!(!live.usable(Instant::now()));
        // A refused connection only counts towards `fall`.
        let other = NodeLive::new(false);
        other.record_scrape(
            group,
            report(Some("event"), 1, 8),
            Duration::ZERO,
            StatusConn::Own { kept: true },
        );
        assert_eq!(
            other.record_scrape_failure(group, "refused".into(), Duration::ZERO, false),
            None
        );
        assert!(other.usable(Instant::now()));
        // The next good status takes it back.
        let events = live.record_scrape(
            group,
            report(Some("event"), 1, 8),
            Duration::ZERO,
            StatusConn::Own { kept: true },
        );
        assert!(events
            .iter()
            .any(|e| e.text.contains("no longer held back")));
        assert!(live.usable(Instant::now()));
    }

    #[test]
    fn a_node_in_a_graceful_restart_gets_a_smaller_share() {
        let cfg = config();
        let (group, node) = (&cfg.groups[0], &cfg.groups[0].nodes[0]);
        let live = NodeLive::new(false);
        let mut r = report(Some("prefork"), 2, 8);
        r.scoreboard = Some("GGW_____".into());
        live.record_scrape(group, r, Duration::ZERO, StatusConn::Own { kept: false });
        let view = live
            .balance_view(group, node, Instant::now())
            .expect("usable");
        assert_eq!(view.ramp, GRACEFUL_SHARE);
        let mut r = report(Some("prefork"), 2, 8);
        r.scoreboard = Some("_WW_____".into());
        live.record_scrape(group, r, Duration::ZERO, StatusConn::Own { kept: false });
        let view = live
            .balance_view(group, node, Instant::now())
            .expect("usable");
        assert_eq!(view.ramp, 1.0);
    }

    fn config() -> crate::config::Config {
        let text = "[[group]]\nname = \"web\"\n  [[group.node]]\n  name = \"a\"\n  address = \"127.0.0.1:8001\"\n";
        crate::config::parse(text, std::path::Path::new("test.toml")).expect("config")
    }

    fn report(mpm: Option<&str>, busy: u32, slots: u32) -> StatusReport {
        let mut r = StatusReport::new(crate::status::apache::KIND);
        r.mpm = mpm.map(str::to_string);
        r.busy_workers = busy;
        r.scoreboard_capacity = Some(slots);
        r
    }

    #[test]
    fn the_status_worker_counts_as_taken_where_the_scraper_holds_it() {
        let cfg = config();
        let (group, node) = (&cfg.groups[0], &cfg.groups[0].nodes[0]);
        let now = Instant::now;
        // prefork, scrape connection kept open: the scraper holds a worker
        let live = NodeLive::new(false);
        live.record_scrape(
            group,
            report(Some("prefork"), 4, 4),
            Duration::ZERO,
            StatusConn::Own { kept: true },
        );
        assert_eq!(live.load(group, node, now()).busy, 4.0);
        assert!(live.worker_per_connection());
        // not kept open: the status request's worker is free again
        live.record_scrape(
            group,
            report(Some("prefork"), 4, 4),
            Duration::ZERO,
            StatusConn::Own { kept: false },
        );
        assert_eq!(live.load(group, node, now()).busy, 3.0);
        // event: keep-alive connections hold no worker
        let live = NodeLive::new(false);
        live.record_scrape(
            group,
            report(Some("event"), 4, 4),
            Duration::ZERO,
            StatusConn::Own { kept: true },
        );
        assert_eq!(live.load(group, node, now()).busy, 3.0);
        assert!(!live.worker_per_connection());
        let mut nginx = StatusReport::new(crate::status::nginx::KIND);
        nginx.busy_workers = 1;
        live.record_scrape(group, nginx, Duration::ZERO, StatusConn::Own { kept: true });
        assert!(!live.worker_per_connection());
    }

    #[test]
    fn each_request_in_flight_holds_a_worker_whatever_the_page_showed() {
        let cfg = config();
        let (group, node) = (&cfg.groups[0], &cfg.groups[0].nodes[0]);
        let live = Arc::new(NodeLive::new(false));
        let _g: Vec<_> = (0..2).map(|_| live.begin_request()).collect();
        // the page was made before the two requests reached the node
        live.record_scrape(
            group,
            report(Some("prefork"), 1, 4),
            Duration::ZERO,
            StatusConn::Own { kept: true },
        );
        let _more: Vec<_> = (0..1).map(|_| live.begin_request()).collect();
        // 3 in flight + the scraper's worker, not 1 + 1
        assert_eq!(live.load(group, node, Instant::now()).busy, 4.0);
    }

    #[test]
    fn the_limit_follows_the_page_and_what_this_proxy_held_when_it_was_read() {
        let cfg = config();
        let (group, node) = (&cfg.groups[0], &cfg.groups[0].nodes[0]);
        let now = Instant::now;
        let live = Arc::new(NodeLive::new(false));
        // No status yet, no max_conns: no limit.
        assert_eq!(live.limit(group, node, now()), None);
        assert!(live.has_room(group, node, now()));
        // 2 requests and 1 idle pooled connection of this proxy when the
        // page was read; it shows 5 of 8 busy (the status request's
        // included): 1 held by others, 1 the scraper's, 3 free, of which
        // this proxy takes 1 (the others may be another instance).
        let inflight: Vec<_> = (0..2).map(|_| live.begin_request()).collect();
        let idle = live.hold_idle();
        let mut r = report(Some("prefork"), 5, 8);
        r.idle_workers = Some(3);
        live.record_scrape(
            group,
            r.clone(),
            Duration::ZERO,
            StatusConn::Own { kept: true },
        );
        assert_eq!(live.limit(group, node, now()), Some(4));
        let h = live.holding(group, node, now());
        assert_eq!((h.inflight, h.idle, h.worker_per_connection), (2, 1, true));
        // One more fits (it reuses the idle connection).
        let more: Vec<_> = (0..1).map(|_| live.begin_request()).collect();
        assert!(
            live.has_room(group, node, now()),
            "3 in flight, 1 idle, limit 4"
        );
        drop(idle);
        let last = live.begin_request();
        assert!(!live.has_room(group, node, now()), "4 in flight");
        drop((inflight, more, last));
        // An nginx page counts connections, not workers: no limit from it.
        let mut nginx = StatusReport::new(crate::status::nginx::KIND);
        nginx.busy_workers = 3;
        live.record_scrape(group, nginx, Duration::ZERO, StatusConn::Own { kept: true });
        assert_eq!(live.limit(group, node, now()), None);
        // On an event node idle connections hold no worker.
        let live = Arc::new(NodeLive::new(false));
        let _idle = live.hold_idle();
        let mut r = report(Some("event"), 1, 4);
        r.idle_workers = Some(3);
        live.record_scrape(group, r, Duration::ZERO, StatusConn::Own { kept: true });
        assert_eq!(live.holding(group, node, now()).idle, 0);
        assert_eq!(live.limit(group, node, now()), Some(3));
    }

    #[test]
    fn the_page_goes_over_a_visitors_connection_while_requests_are_short() {
        let cfg = config();
        let group = &cfg.groups[0];
        let live = Arc::new(NodeLive::new(false));
        let mut r = report(Some("prefork"), 1, 4);
        r.idle_workers = Some(3);
        let read = |conn| live.record_scrape(group, r.clone(), Duration::ZERO, conn);
        read(StatusConn::Own { kept: true });
        // Nothing held, no usual time yet: the scraper's own connection.
        assert_eq!(live.status_over_visitor_conn(false), None);
        let _busy = live.begin_request();
        let _idle = live.hold_idle();
        assert_eq!(live.status_over_visitor_conn(false), None, "no usual time");
        // Short requests: wait twice the usual time and 10 ms for one.
        live.set_usual_head_for_test(Duration::from_millis(20));
        assert_eq!(
            live.status_over_visitor_conn(false),
            Some(Duration::from_millis(50))
        );
        // Long ones: after a page read over the scraper's own connection,
        // kept open (it holds a worker), that connection again ...
        live.set_usual_head_for_test(Duration::from_millis(300));
        assert_eq!(live.status_over_visitor_conn(false), None);
        // ... but after one over a visitor's connection, the hand-over with
        // no wait (this proxy may hold every worker: a new connection of
        // the scraper's would wait in the backlog) ...
        read(StatusConn::Visitor { own_closed: true });
        assert_eq!(live.status_over_visitor_conn(false), Some(Duration::ZERO));
        // ... as long as the scraper keeps no connection of its own.
        live.reserve_status_worker();
        assert_eq!(live.status_over_visitor_conn(false), Some(Duration::ZERO));
        read(StatusConn::Own { kept: false });
        assert_eq!(live.status_over_visitor_conn(false), Some(Duration::ZERO));
        read(StatusConn::Own { kept: true });
        assert_eq!(live.status_over_visitor_conn(false), None);
        // A node held back is read over the scraper's own connection.
        read(StatusConn::Visitor { own_closed: true });
        live.set_usual_head_for_test(Duration::from_millis(20));
        live.record_scrape_failure(group, "timed out".into(), Duration::ZERO, true);
        assert_eq!(live.status_over_visitor_conn(false), None);
        // A probe of a node this proxy holds connections to: the hand-over
        // with no wait (a free worker, or the next connection given back).
        assert_eq!(live.status_over_visitor_conn(true), Some(Duration::ZERO));
    }

    #[test]
    fn a_stale_page_keeps_the_limit_it_gave() {
        let cfg = config();
        let (group, node) = (&cfg.groups[0], &cfg.groups[0].nodes[0]);
        let live = Arc::new(NodeLive::new(false));
        // A page of a node of 4 with `busy` workers busy (the status
        // request's among them): (when it was read, when it is stale).
        let page = |busy: u32| {
            let mut r = report(Some("prefork"), busy, 4);
            r.idle_workers = Some(4 - busy);
            live.record_scrape(group, r, Duration::ZERO, StatusConn::Own { kept: true });
            let read = Instant::now();
            let ages = group.scrape.interval * group.scrape.stale_after;
            (read, read + ages + Duration::from_millis(1))
        };
        // Idle but for the scraper's own worker: 3 are this proxy's.
        let (read, stale) = page(1);
        assert_eq!(live.limit(group, node, read), Some(3));
        // No page since: the node is stale, and still takes no more than
        // its workers (the queue does not empty into its backlog).
        let s = live.snapshot(group, node, 0, stale);
        assert_eq!((s.state, s.limit), (NodeState::Stale, Some(3)));
        assert_eq!(live.limit(group, node, stale), Some(3));
        // A page that left this proxy nothing (others held every worker):
        // once stale, one request at a time still goes.
        let (read, stale) = page(4);
        assert_eq!(live.limit(group, node, read), Some(0));
        assert_eq!(live.limit(group, node, stale), Some(1));
    }

    #[test]
    fn a_page_read_over_a_visitors_connection_sets_no_worker_aside() {
        let cfg = config();
        let (group, node) = (&cfg.groups[0], &cfg.groups[0].nodes[0]);
        let now = Instant::now;
        // 7 requests of this proxy in flight and the status read over an
        // eighth of its connections: the page shows all 8 workers busy,
        // every one this proxy's.
        let live = Arc::new(NodeLive::new(false));
        let inflight: Vec<_> = (0..7).map(|_| live.begin_request()).collect();
        let read = live.begin_status_read();
        assert_eq!(live.inflight(), 8);
        assert_eq!(live.proxied(), 7, "a status read is not a request proxied");
        let mut r = report(Some("prefork"), 8, 8);
        r.idle_workers = Some(0);
        let page = |conn| {
            live.record_scrape(group, r.clone(), Duration::ZERO, conn);
            live.limit(group, node, now())
        };
        assert_eq!(page(StatusConn::Visitor { own_closed: false }), Some(8));
        // The scraper's own connection closed with this read: its worker
        // is set aside until the next page.
        assert_eq!(page(StatusConn::Visitor { own_closed: true }), Some(7));
        // Read over the scraper's own connection, one worker stays its.
        assert_eq!(page(StatusConn::Own { kept: true }), Some(7));
        // After a read over a visitor's connection, that connection goes back
        // to the pool: the load counts the 7 requests, not a scraper's worker.
        page(StatusConn::Visitor { own_closed: false });
        let idle = live.hold_idle();
        drop(read);
        let load = live.load(group, node, now());
        assert_eq!((load.busy, load.inflight), (7.0, 7));
        // The next read falls back to the scraper's own connection: a worker
        // is set aside for it at once.
        live.reserve_status_worker();
        assert_eq!(live.limit(group, node, now()), Some(7));
        drop((inflight, idle));
    }

    #[test]
    fn max_conns_caps_the_limit() {
        let text = "[[group]]\nname = \"web\"\n  [[group.node]]\n  name = \"a\"\n  address = \"127.0.0.1:8001\"\n  max_conns = 2\n";
        let cfg = crate::config::parse(text, std::path::Path::new("t.toml")).expect("config");
        let (group, node) = (&cfg.groups[0], &cfg.groups[0].nodes[0]);
        let live = Arc::new(NodeLive::new(false));
        assert_eq!(live.limit(group, node, Instant::now()), Some(2));
        let mut r = report(Some("prefork"), 1, 8);
        r.idle_workers = Some(7);
        live.record_scrape(group, r, Duration::ZERO, StatusConn::Own { kept: true });
        assert_eq!(live.limit(group, node, Instant::now()), Some(2));
    }

    #[test]
    fn inflight_guard_counts_until_dropped() {
        let live = Arc::new(NodeLive::new(false));
        let g1 = live.begin_request();
        let g2 = live.begin_request();
        assert_eq!(live.inflight(), 2);
        drop(g1);
        assert_eq!(live.inflight(), 1);
        drop(g2);
        assert_eq!(live.inflight(), 0);
        assert_eq!(live.proxied(), 2);
    }
}
