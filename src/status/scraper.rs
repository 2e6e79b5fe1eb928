//! Polling the nodes' status pages.
//!
//! One background task walks the current cluster state every tick and
//! starts a scrape for each node that is due: at most one at a time per
//! node, every `scrape_interval` with +/-10% jitter (and a random first
//! offset) so nodes are not polled in lockstep, and every [`QUEUED_INTERVAL`]
//! while requests wait in the node's group queue (the limits that decide
//! when they go are made from the pages: `cluster::limit`). A scrape is a
//! GET (`status::fetch`) with the group's timeout, a body capped at
//! `MAX_PAGE_BYTES`, then `status::parse`. The result goes to the node's
//! live state, where it doubles as the active health check (rise/fall).
//!
//! Over which connection: on Apache prefork/worker, where a connection
//! holds a worker, the scraper's own kept-open connection holds one worker
//! between scrapes: the status page still answers when every other worker
//! is taken (full is not down), and the node's limit sets that worker
//! aside. When this proxy holds connections to the node and its requests
//! there are short (`NodeLive::status_over_visitor_conn`), the page is read
//! over one of the proxy's own pooled connections instead (an idle one, or
//! the next one a request gives back: `cluster::lend`), the scraper's own
//! connection is closed, and the limit sets no worker aside: every worker
//! serves visitors, and a read takes one for a fraction of a millisecond.
//! When no connection comes back within a few of the node's usual response
//! times, the worker is set aside again and the page is read over the
//! scraper's own connection, if a worker is free for it; if this proxy
//! holds them all, over the next connection a request gives back (a
//! connection opened then would wait in the node's accept backlog, over
//! its workers), and the page is not read this time if none does within
//! the timeout (the worker stays set aside: the next request to end frees
//! it). The same goes for the first read after one over a visitor's
//! connection once the requests stopped being short. Nodes added by a reload
//! are picked up on the next tick; removed ones are forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cluster::lend::Lent;
use crate::cluster::limit;
use crate::cluster::node::{NodeLive, StatusConn};
use crate::cluster::Cluster;
use crate::config::{GroupConfig, NodeConfig};
use crate::proxy::pool::Pool;
use crate::proxy::upstream;
use crate::status;
use crate::status::fetch::{self, Failure};

/// How often the scheduler looks for due nodes.
const TICK: Duration = Duration::from_millis(50);
/// How often a node is read while requests wait in its group's queue
/// (when `scrape_interval` is longer): the nodes' limits follow the others'
/// load (other clients, other webcluster instances) that fast.
pub const QUEUED_INTERVAL: Duration = Duration::from_millis(100);
/// Idle pooled status connections are closed before Apache's default
/// `KeepAliveTimeout` (5 s) would close them under us.
const POOL_IDLE: Duration = Duration::from_secs(4);

pub struct Scraper {
    cluster: Arc<Cluster>,
    /// The proxy's pool of connections to the nodes (for reads over them).
    pool: Arc<Pool>,
    /// The scraper's own kept-open connections (one per status address).
    own: Arc<Pool>,
}

impl Scraper {
    pub fn new(cluster: Arc<Cluster>, pool: Arc<Pool>) -> Scraper {
        Scraper {
            cluster,
            pool,
            own: Arc::new(Pool::with_cap(1)),
        }
    }

    /// One scheduler pass: start the scrapes that are due.
    fn start_due(
        &self,
        next: &mut HashMap<usize, (Instant, Instant)>,
        running: &Arc<Mutex<HashSet<usize>>>,
    ) {
        let state = self.cluster.state();
        let now = Instant::now();
        // Nodes whose requests stopped being answered are held back at once;
        // every node's time in state and history are kept current.
        for group in &state.groups {
            for node in &group.nodes {
                if let Some(event) = node.live.check_stall(now, group.config.scrape.enabled) {
                    event.log(group.name(), &node.config.name);
                }
                node.live.observe(&group.config, &node.config, now);
            }
            // Room that came with time alone (a page gone stale, a node
            // back from a hold-back) goes to the requests waiting for it.
            group.queue.dispatch();
        }
        let mut seen = HashSet::new();
        for group in state.groups.iter().filter(|g| g.config.scrape.enabled) {
            let interval = group.config.scrape.interval;
            let queued = group.queue.waiting() > 0;
            for node in &group.nodes {
                let key = Arc::as_ptr(&node.live) as usize;
                seen.insert(key);
                // (when due, when the last scrape started)
                let (due, started) = *next
                    .entry(key)
                    .or_insert_with(|| (now + interval.mul_f64(fastrand::f64() * 0.1), now));
                let probe = node.live.take_probe();
                let due = match (probe, queued) {
                    // It looks stalled: its page says whether it is.
                    (true, _) => now,
                    (false, true) => due.min(started + QUEUED_INTERVAL),
                    (false, false) => due,
                };
                if now < due {
                    continue;
                }
                {
                    let mut r = running.lock().unwrap_or_else(|p| p.into_inner());
                    if !r.insert(key) {
                        continue;
                    }
                }
                next.insert(
                    key,
                    (now + interval.mul_f64(0.9 + fastrand::f64() * 0.2), now),
                );
                let job = Job {
                    live: Arc::clone(&node.live),
                    node: node.config.clone(),
                    group: group.config.clone(),
                    // A node that looks stalled is read over the scraper's
                    // own connection (none of the proxy's may come back),
                    // unless this proxy's requests hold every worker.
                    probe,
                    pool: Arc::clone(&self.pool),
                    own: Arc::clone(&self.own),
                };
                let running = Arc::clone(running);
                tokio::spawn(async move {
                    job.run().await;
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                });
            }
        }
        next.retain(|k, _| seen.contains(k));
    }
}

#[async_trait]
impl BackgroundService for Scraper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut next = HashMap::new();
        let running = Arc::new(Mutex::new(HashSet::new()));
        loop {
            self.start_due(&mut next, &running);
            // Own connections idle past their time hold a worker for
            // nothing.
            self.own.sweep(POOL_IDLE);
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One scrape of one node.
struct Job {
    live: Arc<NodeLive>,
    /// Its name, its own address (where its visitors' connections go), its
    /// status page's URL and kind.
    node: NodeConfig,
    group: GroupConfig,
    probe: bool,
    pool: Arc<Pool>,
    own: Arc<Pool>,
}

/// What one read gave: the page, over which connection, or why not and
/// whether in time.
type Read = Result<(Vec<u8>, StatusConn), (String, bool)>;

/// What [`Job::borrow`] found for a status read.
enum Borrowed {
    /// One of the proxy's connections to the node.
    Lent(Lent),
    /// None: the page is read over the scraper's own connection.
    Own,
    /// None came back before the read's time was up, and no worker was
    /// free for the scraper's own connection.
    NoneInTime,
}

impl Job {
    async fn run(self) {
        let started = Instant::now();
        let timeout = self.group.scrape.timeout;
        let lend_wait = (self.node.status.address == self.node.address)
            .then(|| self.live.status_over_visitor_conn(self.probe))
            .flatten();
        if let Some(wait) = lend_wait {
            if self.over_a_visitors_conn(wait, started).await {
                return;
            }
        }
        let read = match tokio::time::timeout(timeout, self.over_own_conn()).await {
            Ok(read) => read,
            Err(_) => Err((format!("no answer within {timeout:?}"), true)),
        };
        self.record(read, started);
    }

    /// Parse and record a read's page (or its failure), and log what
    /// changed; whether a page was recorded.
    fn record(&self, read: Read, started: Instant) -> bool {
        let took = started.elapsed();
        let parsed = read.and_then(|(body, conn)| {
            status::parse(self.node.status_kind.hint(), &body)
                .map(|report| (report, conn))
                .map_err(|e| (e.to_string(), false))
        });
        let recorded = parsed.is_ok();
        let events = match parsed {
            Ok((report, conn)) => {
                let events = self.live.record_scrape(&self.group, report, took, conn);
                // The page may show workers freed by others: requests
                // waiting for this node's group may go.
                self.live.room_freed();
                events
            }
            Err((reason, timed_out)) => {
                tracing::debug!(url = %self.node.status.url, "status scrape failed: {reason}");
                self.live
                    .record_scrape_failure(&self.group, reason, took, timed_out)
                    .into_iter()
                    .collect()
            }
        };
        for event in events {
            event.log(&self.group.name, &self.node.name);
        }
        recorded
    }

    /// Read the page over one of the proxy's connections to the node: an
    /// idle pooled one, else the next one a request gives back
    /// ([`Job::borrow`]), and record it (or its failure); false when the
    /// page is to be read over the scraper's own connection instead (none
    /// came back in time while a worker is free for it, or the one lent was
    /// closed under the read before any answer): a worker is then set aside
    /// for the scraper's own connection again. The page is recorded before
    /// the connection goes back to the pool and stops counting as in
    /// flight.
    async fn over_a_visitors_conn(&self, wait: Duration, started: Instant) -> bool {
        let timeout = self.group.scrape.timeout;
        let lent = match self.borrow(wait.min(timeout), started + timeout).await {
            Borrowed::Lent(lent) => lent,
            Borrowed::Own => {
                tracing::debug!(
                    node = %self.node.name,
                    "no connection came back within {wait:?}: status read over the scraper's own"
                );
                self.live.reserve_status_worker();
                return false;
            }
            Borrowed::NoneInTime if self.probe => {
                // The node looked stalled, and none of the requests that
                // hold its workers ended since: it does not answer.
                let why = format!(
                    "no answer within {timeout:?} (none of this proxy's requests holding its workers ended)"
                );
                self.record(Err((why, true)), started);
                return true;
            }
            Borrowed::NoneInTime => {
                // Not a fault of the node's: this proxy's own requests hold
                // every worker, and none ended within the timeout. The page
                // is not read this time (a node that stopped answering is
                // told by its visitors' requests: `NodeLive::check_stall`).
                // Its worker stays set aside, so the next request to end
                // frees one for the next read.
                tracing::debug!(
                    node = %self.node.name,
                    "status not read: every worker busy with this proxy's requests for {timeout:?}"
                );
                return true;
            }
        };
        let Lent {
            stream,
            thread,
            max_idle,
            guard,
        } = lent;
        // The scraper's own connection would hold a worker for nothing.
        let own_closed = self.own.shed(self.node.status.address, u64::MAX) > 0;
        self.live.scrape_sent();
        let left = timeout.saturating_sub(started.elapsed());
        let fetched = fetch::get(stream, &self.node.status, left * 2);
        let (read, conn) = match tokio::time::timeout(left, fetched).await {
            Ok(Ok(page)) => (
                Ok((page.body, StatusConn::Visitor { own_closed })),
                page.conn,
            ),
            Ok(Err(Failure {
                before_response: true,
                ..
            })) => {
                // The node closed it as it was lent (the keep-alive race):
                // its worker is free for the scraper's own connection.
                drop(guard);
                self.live.reserve_status_worker();
                return false;
            }
            Ok(Err(f)) => (Err((f.reason, false)), None),
            Err(_) => (Err((format!("no answer within {timeout:?}"), true)), None),
        };
        // A page refused is not read again: its connection is closed.
        if self.record(read, started) {
            if let Some(conn) = conn {
                self.pool.put_held_on(
                    thread,
                    self.node.address,
                    conn,
                    max_idle,
                    Some(self.live.hold_idle()),
                );
            }
        }
        // Its slot goes to the requests waiting for the node.
        drop(guard);
        true
    }

    /// One of the proxy's connections to the node for a status read: an
    /// idle pooled one, else the next one a request gives back within
    /// `wait`. The idle one is taken only while the node's limit has room
    /// for one more connection besides it (it is counted in flight before
    /// it leaves the pool, so its worker is never seen free): a request
    /// let in meanwhile to reuse it then has room for a new connection.
    /// At the limit, a connection a request gives back was never counted
    /// idle, so no request was let in to reuse it.
    ///
    /// When none comes back within `wait`, a worker is set aside for the
    /// scraper's own connection from then on. If this proxy holds more
    /// workers than the new limit leaves it, none is free for that
    /// connection, which would wait in the node's accept backlog (one
    /// connection over the node's workers) until one of this proxy's
    /// requests ends; the connection that request gives back carries the
    /// read instead, until `deadline`.
    async fn borrow(&self, wait: Duration, deadline: Instant) -> Borrowed {
        let guard = self.live.begin_status_read();
        let h = self.live.holding(&self.group, &self.node, Instant::now());
        let room = limit::within(h.limit, h.inflight, h.idle);
        if room {
            if let Some((stream, thread, max_idle)) =
                self.pool.take_any(self.node.address, Duration::MAX)
            {
                return Borrowed::Lent(Lent {
                    stream,
                    thread,
                    max_idle,
                    guard,
                });
            }
        }
        drop(guard);
        let mut given = self.live.lend.ask();
        tokio::select! {
            lent = &mut given => return lent.map_or(Borrowed::Own, Borrowed::Lent),
            _ = tokio::time::sleep(wait) => {}
        }
        self.live.reserve_status_worker();
        let h = self.live.holding(&self.group, &self.node, Instant::now());
        let none = if limit::within(h.limit, h.inflight, h.idle) {
            Borrowed::Own
        } else {
            tokio::select! {
                lent = &mut given => return lent.map_or(Borrowed::Own, Borrowed::Lent),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            Borrowed::NoneInTime
        };
        self.live.lend.cancel();
        // One handed over as the wait ended is used all the same.
        given.try_recv().map_or(none, Borrowed::Lent)
    }

    /// Read the page over the scraper's own connection: the kept one, or a
    /// new one (also when the kept one was closed by the node meanwhile).
    /// The caller bounds it by the group's timeout; each step's own bound
    /// is longer, so that a node that does not answer is told by that.
    async fn over_own_conn(&self) -> Read {
        let timeout = self.group.scrape.timeout * 2;
        let url = &self.node.status;
        let addr = url.address;
        self.live.scrape_sent();
        let mut page = None;
        if let Some((kept, _, _)) = self.own.take_any(addr, POOL_IDLE) {
            match fetch::get(kept, url, timeout).await {
                Ok(p) => page = Some(p),
                Err(f) if f.before_response => {}
                Err(f) => return Err((f.reason, false)),
            }
        }
        let page = match page {
            Some(p) => p,
            None => {
                let conn = upstream::connect(None, addr, timeout, Duration::ZERO, || None)
                    .await
                    .map_err(|e| {
                        let words = fetch::in_words(&e);
                        (format!("cannot connect to {addr}: {words}"), false)
                    })?;
                fetch::get(conn.stream, url, timeout)
                    .await
                    .map_err(|f| (f.reason, false))?
            }
        };
        let kept = match page.conn {
            Some(conn) => {
                self.own.put(addr, conn, POOL_IDLE);
                true
            }
            None => false,
        };
        Ok((page.body, StatusConn::Own { kept }))
    }
}
