//! Polling the nodes' status pages.
//!
//! One background task walks the current cluster state every tick and
//! starts a scrape for each node that is due: at most one at a time per
//! node, every `scrape_interval` with +/-10% jitter (and a random first
//! offset) so nodes are not polled in lockstep, and every [`QUEUED_INTERVAL`]
//! while requests wait in the node's group queue (the limits that decide
//! when they go are made from the pages: `cluster::limit`). A scrape is a GET over a
//! pooled keep-alive connection with the group's timeout, a body capped at
//! `MAX_PAGE_BYTES`, then `status::parse`. The result goes to the node's
//! live state, where it doubles as the active health check (rise/fall).
//! On Apache prefork/worker the kept-open status connection holds one
//! worker between scrapes: the status page still answers when every other
//! worker is taken (full is not down), and the load estimate counts that
//! worker as taken (`NodeLive::load`). It is not lent to visitors between
//! scrapes: once given up, traffic that is not this proxy's may take every
//! worker, and the page could not be read until some of it ended.
//! Nodes added by a reload are picked up on the next tick; removed ones are
//! forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;

use crate::cluster::node::NodeLive;
use crate::cluster::Cluster;
use crate::config::{GroupConfig, StatusKind, StatusUrl};
use crate::status::{self, MAX_PAGE_BYTES};

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
    connector: Arc<Connector>,
}

impl Scraper {
    pub fn new(cluster: Arc<Cluster>) -> Scraper {
        Scraper {
            cluster,
            connector: Arc::new(Connector::new(None)),
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
            // Room that came with time alone (a status gone stale, a node
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
                let due = match (node.live.take_probe(), queued) {
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
                    node: node.config.name.clone(),
                    group: group.config.clone(),
                    url: node.config.status.clone(),
                    kind: node.config.status_kind,
                };
                let connector = Arc::clone(&self.connector);
                let running = Arc::clone(running);
                tokio::spawn(async move {
                    job.run(&connector).await;
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
    node: String,
    group: GroupConfig,
    url: StatusUrl,
    kind: StatusKind,
}

impl Job {
    async fn run(self, connector: &Connector) {
        let started = Instant::now();
        let timeout = self.group.scrape.timeout;
        self.live.scrape_sent();
        let fetched = fetch(connector, &self.url, timeout);
        let result = match tokio::time::timeout(timeout, fetched).await {
            Ok(Ok((body, kept))) => status::parse(self.kind.hint(), &body)
                .map(|report| (report, kept))
                .map_err(|e| (e.to_string(), false)),
            Ok(Err(e)) => Err((e, false)),
            Err(_) => Err((format!("no answer within {timeout:?}"), true)),
        };
        let took = started.elapsed();
        let events = match result {
            Ok((report, kept)) => {
                let events = self.live.record_scrape(&self.group, report, took, kept);
                // The page may show workers freed by others: requests
                // waiting for this node's group may go.
                self.live.room_freed();
                events
            }
            Err((reason, timed_out)) => {
                tracing::debug!(url = %self.url.url, "status scrape failed: {reason}");
                self.live
                    .record_scrape_failure(&self.group, reason, took, timed_out)
                    .into_iter()
                    .collect()
            }
        };
        for event in events {
            event.log(&self.group.name, &self.node);
        }
    }
}

/// GET the status page; a pooled connection the node closed meanwhile is
/// retried once on a new one. Ok carries the body and whether the connection
/// was kept open for the next scrape.
async fn fetch(
    connector: &Connector,
    url: &StatusUrl,
    timeout: Duration,
) -> Result<(Vec<u8>, bool), String> {
    let mut peer = HttpPeer::new(url.address, false, String::new());
    peer.options.connection_timeout = Some(timeout);
    peer.options.total_connection_timeout = Some(timeout);
    peer.options.read_timeout = Some(timeout);
    peer.options.write_timeout = Some(timeout);
    peer.options.idle_timeout = Some(POOL_IDLE);
    match fetch_once(connector, &peer, url).await {
        Err((reused, _)) if reused => fetch_once(connector, &peer, url).await.map_err(|(_, e)| e),
        other => other.map_err(|(_, e)| e),
    }
}

/// A transport error in words, for the status page (`connection refused`
/// rather than pingora's `ConnectRefused`).
fn in_words(e: &pingora::Error) -> &'static str {
    use pingora::ErrorType as E;
    match e.etype() {
        E::ConnectTimedout => "connect timed out",
        E::ConnectRefused => "connection refused",
        E::ConnectNoRoute => "no route to host",
        E::ReadTimedout => "read timed out",
        E::WriteTimedout => "write timed out",
        E::ConnectionClosed => "connection closed by the node",
        E::ReadError => "read error",
        E::WriteError => "write error",
        E::InvalidHTTPHeader | E::H1Error => "invalid HTTP response",
        other => other.as_str(),
    }
}

/// Ok carries the body and whether the connection went back to the pool;
/// Err whether the connection was a reused one.
async fn fetch_once(
    connector: &Connector,
    peer: &HttpPeer,
    url: &StatusUrl,
) -> Result<(Vec<u8>, bool), (bool, String)> {
    let (mut session, reused) = connector.get_http_session(peer).await.map_err(|e| {
        (
            false,
            format!("cannot connect to {}: {}", url.address, in_words(&e)),
        )
    })?;
    let fail = |what: &str, e: pingora::BError| (reused, format!("{what}: {}", in_words(&e)));
    let mut req = RequestHeader::build("GET", url.path_and_query.as_bytes(), Some(3))
        .map_err(|e| fail("bad status path", e))?;
    req.insert_header("host", url.host.as_str())
        .map_err(|e| fail("bad Host", e))?;
    req.insert_header(
        "user-agent",
        concat!("webcluster/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|e| fail("bad header", e))?;
    req.insert_header("accept", "text/plain")
        .map_err(|e| fail("bad header", e))?;
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| fail("sending the request failed", e))?;
    session
        .read_response()
        .await
        .map_err(|e| fail("reading the response failed", e))?;
    let code = session.get_status().map_or(0, |s| s.as_u16());
    if code != 200 {
        let hint = match code {
            401 | 403 => " (does the node allow the proxy's address to read it?)",
            404 => " (is mod_status / stub_status enabled at this path?)",
            _ => "",
        };
        return Err((false, format!("HTTP {code} from the status page{hint}")));
    }
    let mut body = Vec::new();
    loop {
        match session.read_body_ref().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_PAGE_BYTES {
                    return Err((false, format!("status page over {MAX_PAGE_BYTES} bytes")));
                }
                body.extend_from_slice(chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(fail("reading the page failed", e)),
        }
    }
    session.respect_keepalive();
    let kept = session.will_keepalive();
    if kept {
        connector
            .release_http_session(session, peer, Some(POOL_IDLE))
            .await;
    }
    Ok((body, kept))
}
