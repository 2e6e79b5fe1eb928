//! The shared request queue (issue 17), end to end: the real `webcluster`
//! binary in front of real Apache prefork nodes with few workers, each
//! scraped through its own status page.
//!
//! What is checked:
//! 1. more concurrent slow requests than all the nodes' workers together:
//!    the proxy never holds more connections to a node than it has workers
//!    (`ss`, sampled all along), nothing waits in a node's accept backlog
//!    (the listening socket's Recv-Q in `ss -ltn` is never seen above 0 in
//!    two samples in a row: a new connection passes through the accept
//!    queue for the instant the kernel takes to hand it to a worker free
//!    for it, and on a busy machine a sample may catch that; one that waits
//!    for a worker stays there until a request ends, tens of samples), and every
//!    request is answered 200;
//! 2. requests are served in the order they arrived (the node's own log of
//!    when each request began);
//! 3. `max_queue` answers 503 at once and `queue_timeout` 503 after the
//!    wait, both with `Retry-After`; the node never sees those requests;
//! 4. a session-pinned request waits for its node while a request free to go
//!    anywhere is served by the other node meanwhile;
//! 5. a visitor that disconnects while queued leaves the queue and its
//!    request is never sent to a node (the node's access log);
//! 6. requests that hold their workers for longer than a status page stays
//!    fresh: the same, with the pages read meanwhile keeping the limits;
//! 7. short requests (the node's usual response time well inside a page's
//!    freshness): the status page is read over the proxy's own pooled
//!    connections (`cluster::lend`), so visitors get every worker of a node
//!    (its own log of when each request began and how long it took), still
//!    with none over its workers and none in its backlog;
//! 8. two webcluster instances in front of the same nodes, with more slow
//!    requests than the nodes' free workers: every request is served, and
//!    together they never hold more than one connection per instance over
//!    a node's workers (the last free worker each may take until the next
//!    page: `cluster::limit`), so at most those wait in its backlog.
//! 9. a node whose status page went stale keeps the limit its last page
//!    gave: a burst of queued requests still never holds more connections
//!    to it than its workers.
//! 10. requests that stop being short (the page read over the proxy's own
//!     connections until then): the scraper's own connection comes back
//!     without ever waiting in the node's backlog.
//!
//! No assertion is about a duration: waits are polls with generous bounds,
//! and every loop is bounded in count and time.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::http::Response;
use support::webcluster::{base_config, group_config, reload_counts, Webcluster};
use support::{http_get, ApacheNode, ApacheOpts};

/// Workers of each node.
const WORKERS: u32 = 3;

/// A prefork node with [`WORKERS`] workers that also logs, for each
/// request, when it began and ended (microseconds) and its path and query.
fn node(name: &str) -> ApacheNode {
    let mut opts = ApacheOpts::prefork(name, WORKERS);
    opts.extra_directives =
        vec!["CustomLog logs/begin.log \"%{begin:usec}t %{end:usec}t %U%q\"".to_string()];
    ApacheNode::start(opts)
}

/// The config of a proxy on `listen` and `admin` in front of `nodes`, one
/// group `web` with `group_extra`, each node with `node_extra`.
fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    group_extra: &str,
    nodes: &[(String, SocketAddr)],
    node_extra: &str,
) -> String {
    let list: Vec<(&str, SocketAddr, &str)> = nodes
        .iter()
        .map(|(n, a)| (n.as_str(), *a, node_extra))
        .collect();
    base_config(listen, admin, "") + &group_config("web", group_extra, &list)
}

/// (name, address) of each node, for [`config`].
fn named(nodes: &[&ApacheNode]) -> Vec<(String, SocketAddr)> {
    nodes
        .iter()
        .map(|n| (n.name().to_string(), n.addr()))
        .collect()
}

fn proxy(group_extra: &str, nodes: &[&ApacheNode], node_extra: &str) -> Webcluster {
    let nodes = named(nodes);
    let extra = group_extra.to_string();
    let node_extra = node_extra.to_string();
    let wc =
        Webcluster::start(move |listen, admin| config(listen, admin, &extra, &nodes, &node_extra));
    wc.wait_all_up();
    // Every node's limit is known (its status was read) before any request.
    wc.wait_status("every node has a limit", |s| {
        support::webcluster::nodes(s)
            .iter()
            .all(|n| n["limit"].as_u64().is_some())
    });
    wc
}

fn group(status: &Value) -> &Value {
    &status["groups"][0]
}

/// Requests the proxy got so far: sent to a node or waiting in the queue.
fn arrived(status: &Value) -> u64 {
    let g = group(status);
    g["totals"]["proxied_total"].as_u64().unwrap_or(0) + g["queue"]["length"].as_u64().unwrap_or(0)
}

/// Requests the proxy has: in flight to a node or waiting in the queue.
fn held(status: &Value) -> u64 {
    let g = group(status);
    g["totals"]["inflight"].as_u64().unwrap_or(0) + g["queue"]["length"].as_u64().unwrap_or(0)
}

/// `GET path` through the proxy on its own thread.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> JoinHandle<Option<Response>> {
    let path = path.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    thread::spawn(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http_get(addr, &path, &h).ok()
    })
}

/// Send `n` requests through the proxy one after the other, each only once
/// the proxy holds the one before (in flight or queued): they arrive in
/// this order. `path(i)` is the i-th request's path.
fn staggered(
    wc: &Webcluster,
    n: usize,
    path: impl Fn(usize) -> String,
) -> Vec<JoinHandle<Option<Response>>> {
    let base = arrived(&wc.status());
    (0..n)
        .map(|i| {
            let h = get(wc.listen, &path(i), &[]);
            wc.wait_status(&format!("the proxy holds request {i}"), |s| {
                arrived(s) > base + i as u64
            });
            h
        })
        .collect()
}

/// What `ss` shows of a node's port: established connections to it, and the
/// Recv-Q of its listening socket (connections the kernel accepted that no
/// worker took yet).
fn ss_sample(port: u16) -> (u32, u32) {
    let out = |args: &[&str]| {
        let o = Command::new("ss").args(args).output().expect("run ss");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let filter = format!("dport = :{port}");
    let established = out(&["-Htn", "state", "established", &filter])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u32;
    let filter = format!("sport = :{port}");
    let backlog = out(&["-Hltn", &filter])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    (established, backlog)
}

/// Samples [`ss_sample`] for each port until stopped (at most a minute);
/// the most connections seen of each, and the most samples in a row that
/// saw its accept queue not empty.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Vec<Most>, String)>,
}

/// The most a [`Sampler`] saw of one node.
#[derive(Debug, Clone, Copy, Default)]
struct Most {
    /// Connections open to it at once.
    established: u32,
    /// Samples in a row with a connection in its accept queue.
    backlog_run: u32,
    /// Connections in its accept queue at once.
    backlog: u32,
}

impl Sampler {
    fn start(ports: Vec<u16>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut most = vec![Most::default(); ports.len()];
            let mut run = vec![0; ports.len()];
            let mut seen = String::new();
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                for (i, &p) in ports.iter().enumerate() {
                    let (e, b) = ss_sample(p);
                    run[i] = if b > 0 { run[i] + 1 } else { 0 };
                    if (run[i] > 1 || e > WORKERS) && seen.is_empty() {
                        // What was open at the node then, for the message.
                        let filter = format!("( dport = :{p} or sport = :{p} )");
                        let o = Command::new("ss").args(["-tnp", &filter]).output();
                        seen = o
                            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                            .unwrap_or_default();
                    }
                    let m = &mut most[i];
                    m.established = m.established.max(e);
                    m.backlog_run = m.backlog_run.max(run[i]);
                    m.backlog = m.backlog.max(b);
                }
                thread::sleep(Duration::from_millis(5));
            }
            (most, seen)
        });
        Sampler { stop, handle }
    }

    /// The most seen for each port (connections; samples in a row with a
    /// connection in the accept queue), and what `ss` showed the first time
    /// a connection waited there or more were open than [`WORKERS`].
    fn finish(self) -> (Vec<Most>, String) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler")
    }
}

/// Wait (bounded) until the node's access log has a line with `text`:
/// Apache writes it after the response went out.
fn logged(node: &ApacheNode, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = node.access_log();
        if log.contains(text) || Instant::now() > deadline {
            return log;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The ids (`id=N`) of the requests a node began, in the order it began
/// them (its `begin.log`).
fn begun(nodes: &[&ApacheNode]) -> Vec<(u64, usize)> {
    let mut all = Vec::new();
    for n in nodes {
        let log = std::fs::read_to_string(n.dir().join("logs/begin.log")).unwrap_or_default();
        for line in log.lines() {
            let mut parts = line.split_whitespace();
            let (Some(t), Some(_end), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let id = path
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("id="))
                .and_then(|v| v.parse().ok());
            if let (Ok(t), Some(id)) = (t.parse::<u64>(), id) {
                all.push((t, id));
            }
        }
    }
    all.sort();
    all
}

/// Wait (bounded) until `cond` holds; the assertions after it tell.
fn wait_for(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

fn results(handles: Vec<JoinHandle<Option<Response>>>) -> Vec<Option<Response>> {
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect()
}

/// Every request answered 200, and at no time more connections open to a
/// node (scrapers' included) than its `workers`, nor any in its accept
/// queue, as the sampler saw them (one port per name, in order).
fn all_served_none_overfilled(
    handles: Vec<JoinHandle<Option<Response>>>,
    sampler: Sampler,
    names: &[&str],
    workers: u32,
) {
    let answers = results(handles);
    let (most, seen) = sampler.finish();
    let ok = answers
        .iter()
        .filter(|r| r.as_ref().is_some_and(|r| r.status == 200))
        .count();
    assert_eq!(ok, answers.len(), "every request is served: {answers:?}");
    for (node, m) in names.iter().zip(&most) {
        let Most {
            established,
            backlog_run,
            ..
        } = *m;
        assert!(
            established <= workers,
            "node {node}: {established} connections open to it at once (scrapers' included), more than its {workers} workers:\n{seen}"
        );
        assert!(
            backlog_run <= 1,
            "node {node}: a connection waited in its accept queue ({backlog_run} samples in a row):\n{seen}"
        );
    }
}

/// Two nodes behind one proxy, and `per_worker` requests per worker of
/// both of `ms` each, all at once: some wait in the proxy's queue; every
/// one is served and none overfills a node
/// ([`all_served_none_overfilled`]). The nodes, the proxy and how many
/// requests were made.
fn queued_burst(per_worker: u32, ms: u32) -> (ApacheNode, ApacheNode, Webcluster, usize) {
    let (a, b) = (node("a"), node("b"));
    let wc = proxy("queue_timeout = \"30s\"", &[&a, &b], "");
    let sampler = Sampler::start(vec![a.addr().port(), b.addr().port()]);
    let n = (2 * WORKERS * per_worker) as usize;
    let handles: Vec<_> = (0..n)
        .map(|i| get(wc.listen, &format!("/sleep?ms={ms}&id={i}"), &[]))
        .collect();
    wc.wait_status("requests waiting in the queue", |s| {
        group(s)["queue"]["length"].as_u64().unwrap_or(0) > 0
    });
    all_served_none_overfilled(handles, sampler, &["a", "b"], WORKERS);
    (a, b, wc, n)
}

#[test]
fn more_requests_than_workers_wait_in_the_proxy_not_in_a_node_backlog() {
    // 5 requests per worker of the two nodes together, all at once.
    let (a, b, wc, n) = queued_burst(5, 300);
    let s = wc.status();
    assert!(group(&s)["queue"]["queued_total"].as_u64().unwrap_or(0) > 0);
    assert_eq!(group(&s)["queue"]["length"], 0);
    // Both nodes served (the queue is shared, not one per node).
    wait_for(|| begun(&[&a, &b]).len() == n);
    let served = begun(&[&a]).len() + begun(&[&b]).len();
    assert_eq!(served, n);
    assert!(!begun(&[&a]).is_empty() && !begun(&[&b]).is_empty());
}

#[test]
fn requests_longer_than_a_status_stays_fresh_still_wait_in_the_proxy() {
    // Each request holds its worker for 1.2 s, twice the time a page stays
    // fresh here (3 scrape intervals of 200 ms): the pages read while they
    // run (over the scraper's own kept connection, on its own worker) keep
    // the limits, so the queue does not empty into the nodes' backlogs.
    queued_burst(2, 1200);
}

#[test]
fn short_requests_get_every_worker_and_the_page_is_read_over_the_proxys_connections() {
    // Requests of 20 ms, 40 per worker of the two nodes at once: the proxy
    // reads each node's page over one of its own pooled connections
    // (`cluster::lend`), so no worker is set aside for the scraper and
    // visitors get all of them, still without a connection over a node's
    // workers or one waiting in its backlog (checked in `queued_burst`).
    let (a, b, _wc, _) = queued_burst(40, 20);
    for node in [&a, &b] {
        // When each request began and ended (microseconds, the node's own
        // clock: a worker ends one before it begins the next), and what.
        let log = std::fs::read_to_string(node.dir().join("logs/begin.log")).unwrap_or_default();
        let spans: Vec<(u64, u64, &str)> = log
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?, f.next()?))
            })
            .collect();
        // The most visitors' requests the node ran at once.
        let mut edges: Vec<(u64, i32)> = spans
            .iter()
            .filter(|(_, _, what)| what.starts_with("/sleep"))
            .flat_map(|&(begin, end, _)| [(begin, 1), (end, -1)])
            .collect();
        edges.sort();
        let (mut at_once, mut most) = (0, 0);
        for (_, d) in edges {
            at_once += d;
            most = most.max(at_once);
        }
        assert_eq!(
            most,
            WORKERS as i32,
            "node {}: visitors had {most} of its {WORKERS} workers at most\n{log}",
            node.name()
        );
        // Some page came over a connection that also carried visitors'
        // requests (the access log's second field is the client's port).
        let access = node.access_log();
        let port_of = |l: &str| l.split_whitespace().nth(1).map(str::to_string);
        let visitor_ports: std::collections::HashSet<String> = access
            .lines()
            .filter(|l| l.contains("GET /sleep"))
            .filter_map(port_of)
            .collect();
        assert!(
            access
                .lines()
                .filter(|l| l.contains("GET /server-status"))
                .filter_map(port_of)
                .any(|p| visitor_ports.contains(&p)),
            "node {}: every status page was read over a connection of its own\n{access}",
            node.name()
        );
    }
}

#[test]
fn when_requests_stop_being_short_the_scrapers_connection_waits_for_a_worker() {
    // Short requests first, many at once: the page is read over the proxy's
    // own connections and the limit leaves no worker for the scraper. Then
    // long ones, queued behind them: once the node's usual response time is
    // long, the page is read over the scraper's own connection again, but
    // only when a worker is free for it (else over the next connection a
    // request gives back); never by a connection that waits in the node's
    // backlog while this proxy's requests hold every worker.
    let a = node("a");
    let wc = proxy("queue_timeout = \"30s\"", &[&a], "");
    let sampler = Sampler::start(vec![a.addr().port()]);
    let short = (WORKERS * 30) as usize;
    let mut handles: Vec<_> = (0..short)
        .map(|i| get(wc.listen, &format!("/sleep?ms=5&id={i}"), &[]))
        .collect();
    wc.wait_status("the short requests to arrive", |s| {
        arrived(s) >= short as u64
    });
    handles.extend(
        (0..WORKERS * 4).map(|i| get(wc.listen, &format!("/sleep?ms=300&id=long{i}"), &[])),
    );
    all_served_none_overfilled(handles, sampler, &["a"], WORKERS);
    // The page was read while the long requests ran (not only before).
    let access = a.access_log();
    let first_long = access.find("id=long").expect("a long request in the log");
    assert!(
        access[first_long..].contains("GET /server-status"),
        "no status page read after the long requests began:\n{access}"
    );
}

#[test]
fn a_status_page_gone_stale_still_bounds_its_node() {
    // The node's page stops being readable (here: the proxy is reloaded to
    // read it at a path that answers 404; on a busy node, a page that times
    // out does the same) and goes stale. The limit it last gave still holds:
    // a burst of queued requests does not all go to the node at once, into
    // its accept backlog. (`fall` is high so that the failed reads do not
    // mark the node down meanwhile.)
    let a = node("a");
    let extra = "queue_timeout = \"30s\"\nfall = 1000";
    let wc = proxy(extra, &[&a], "");
    let gone = format!("status_url = \"http://{}/no-such-status?auto\"", a.addr());
    let s = wc.reload_with(&config(wc.listen, wc.admin, extra, &named(&[&a]), &gone));
    assert_eq!(reload_counts(&s), (1, 0), "the reload: {s:#}");
    let s = wc.wait_status("the node's status to go stale", |s| {
        support::webcluster::node(s, "a")["state"] == "stale"
    });
    let limit = support::webcluster::node(&s, "a")["limit"].as_u64();
    assert!(
        limit.is_some_and(|l| (1..=u64::from(WORKERS)).contains(&l)),
        "a stale node keeps a limit within its workers: {limit:?}"
    );
    let sampler = Sampler::start(vec![a.addr().port()]);
    let n = (WORKERS * 20) as usize;
    let handles: Vec<_> = (0..n)
        .map(|i| get(wc.listen, &format!("/sleep?ms=20&id={i}"), &[]))
        .collect();
    all_served_none_overfilled(handles, sampler, &["a"], WORKERS);
    let s = wc.status();
    assert_eq!(support::webcluster::node(&s, "a")["state"], "stale");
    assert!(group(&s)["queue"]["queued_total"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn requests_are_served_in_the_order_they_arrived() {
    let a = node("a");
    // One request at a time: the order the node begins them in is the
    // order the queue hands out its slots, with no race between two.
    let wc = proxy("queue_timeout = \"30s\"", &[&a], "max_conns = 1");
    let n = 8;
    let handles = staggered(&wc, n, |i| format!("/sleep?ms=150&id={i}"));
    let answers = results(handles);
    assert!(
        answers
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.status == 200)),
        "{answers:?}"
    );
    logged(&a, &format!("id={}", n - 1));
    let order: Vec<usize> = begun(&[&a]).into_iter().map(|(_, id)| id).collect();
    assert_eq!(
        order,
        (0..n).collect::<Vec<_>>(),
        "the node began them in arrival order"
    );
}

#[test]
fn a_full_queue_and_a_queue_timeout_answer_503_with_retry_after() {
    let a = node("a");
    // One request at a time reaches the node (max_conns), two may wait.
    let wc = proxy(
        "queue_timeout = \"2s\"\nmax_queue = 2",
        &[&a],
        "max_conns = 1",
    );
    let busy = get(wc.listen, "/sleep?ms=6000&id=busy", &[]);
    wc.wait_status("one in flight", |s| held(s) == 1);
    let waiting = staggered(&wc, 2, |i| format!("/sleep?ms=1&id=waiting{i}"));
    wc.wait_status("two waiting", |s| group(s)["queue"]["length"] == 2);
    // The queue is full: answered at once.
    let refused = http_get(wc.listen, "/sleep?ms=1&id=refused", &[]).expect("answer");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert!(
        refused.body.contains("busy"),
        "plain body: {:?}",
        refused.body
    );
    // The two waiting ones wait out queue_timeout (2s, the node is busy 6s).
    for r in results(waiting) {
        let r = r.expect("answered");
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("retry-after"), Some("2"));
    }
    let busy = busy.join().expect("thread").expect("answered");
    assert_eq!(busy.status, 200);
    let s = wc.status();
    let q = &group(&s)["queue"];
    assert_eq!(q["refused_total"], 1, "{q}");
    assert_eq!(q["timeouts_total"], 2, "{q}");
    let log = logged(&a, "id=busy");
    for id in ["waiting0", "waiting1", "refused"] {
        assert!(!log.contains(id), "the node saw {id}:\n{log}");
    }
    assert!(log.contains("id=busy"), "{log}");
    let metrics = http_get(wc.admin, "/metrics", &[]).expect("metrics").body;
    assert!(
        metrics.contains("webcluster_queue_timeouts_total{group=\"web\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("webcluster_queue_refusals_total{group=\"web\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_session_pinned_request_waits_for_its_node() {
    let (a, b) = (node("a"), node("b"));
    let wc = proxy(
        "queue_timeout = \"30s\"\naffinity = \"insert\"\nbalance = \"round_robin\"",
        &[&a, &b],
        "max_conns = 1",
    );
    // A session on some node: its cookie.
    let first = http_get(wc.listen, "/sleep?ms=1", &[]).expect("first");
    let home = first.header("x-webcluster-node").expect("node").to_string();
    let cookie = first
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let other = if home == "a" { "b" } else { "a" };
    // The session's node is busy with one of the session's requests.
    let busy = get(
        wc.listen,
        "/sleep?ms=4000&id=busy",
        &[("Cookie", cookie.as_str())],
    );
    wc.wait_status("one in flight", |s| held(s) == 1);
    let pinned = get(
        wc.listen,
        "/sleep?ms=1&id=pinned",
        &[("Cookie", cookie.as_str())],
    );
    wc.wait_status("the session's request waits", |s| {
        group(s)["queue"]["length"] == 1
    });
    // A request free to go anywhere does not wait behind it.
    let free = http_get(wc.listen, "/sleep?ms=1&id=free", &[]).expect("free");
    assert_eq!(free.status, 200);
    assert_eq!(free.header("x-webcluster-node"), Some(other));
    assert_eq!(
        group(&wc.status())["queue"]["length"],
        1,
        "the pinned one still waits for its node"
    );
    let pinned = pinned.join().expect("thread").expect("answered");
    assert_eq!(pinned.status, 200, "{pinned:?}");
    assert_eq!(pinned.header("x-webcluster-node"), Some(home.as_str()));
    let busy = busy.join().expect("thread").expect("answered");
    assert_eq!(busy.header("x-webcluster-node"), Some(home.as_str()));
}

#[test]
fn a_visitor_that_leaves_while_queued_is_never_sent_to_a_node() {
    let a = node("a");
    let wc = proxy("queue_timeout = \"30s\"", &[&a], "max_conns = 1");
    let busy = get(wc.listen, "/sleep?ms=5000&id=busy", &[]);
    wc.wait_status("one in flight", |s| held(s) == 1);
    let mut s = TcpStream::connect(wc.listen).expect("connect");
    write!(
        s,
        "GET /sleep?ms=1&id=gone HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    wc.wait_status("it waits", |st| group(st)["queue"]["length"] == 1);
    drop(s);
    wc.wait_status("it left the queue", |st| {
        group(st)["queue"]["length"] == 0 && group(st)["queue"]["abandoned_total"] == 1
    });
    // The slot frees; a later request is served, the one that left is not.
    let busy = busy.join().expect("thread").expect("answered");
    assert_eq!(busy.status, 200);
    let after = http_get(wc.listen, "/sleep?ms=1&id=after", &[]).expect("after");
    assert_eq!(after.status, 200);
    let log = logged(&a, "id=after");
    assert!(log.contains("id=after"), "{log}");
    assert!(
        !log.contains("id=gone"),
        "the node saw the request whose visitor left:\n{log}"
    );
}

#[test]
fn two_instances_share_the_nodes_without_overfilling_them() {
    // Two webcluster instances in front of the same two prefork nodes of
    // 4 workers: each instance's scraper holds one worker of each node (its
    // kept status connection), which leaves 2 per node for the visitors of
    // both. Each instance reads the other's connections on the page as
    // workers held by others and takes half of the free ones.
    const SHARED_WORKERS: u32 = 4;
    let opts = |name: &str| {
        let mut o = ApacheOpts::prefork(name, SHARED_WORKERS);
        o.extra_directives =
            vec!["CustomLog logs/begin.log \"%{begin:usec}t %{end:usec}t %U%q\"".to_string()];
        ApacheNode::start(o)
    };
    let (a, b) = (opts("a"), opts("b"));
    let one = proxy("queue_timeout = \"30s\"", &[&a, &b], "");
    let two = proxy("queue_timeout = \"30s\"", &[&a, &b], "");
    // Both see the other's status connection before any request.
    for wc in [&one, &two] {
        wc.wait_status("the other instance's scraper seen", |s| {
            support::webcluster::nodes(s)
                .iter()
                .all(|n| n["busy_workers"].as_u64() == Some(2))
        });
    }
    let sampler = Sampler::start(vec![a.addr().port(), b.addr().port()]);
    // 6 slow requests to each instance at once: 12 for the 4 workers the
    // visitors have.
    let per = 6;
    let handles: Vec<_> = (0..2 * per)
        .map(|i| {
            let wc = if i % 2 == 0 { &one } else { &two };
            get(wc.listen, &format!("/sleep?ms=300&id={i}"), &[])
        })
        .collect();
    // Every request is served. Instances that both want the last free
    // worker a page shows both take it (`cluster::limit`): a node may then
    // hold a connection more than its workers from each of them, in its
    // backlog, until the next page shows it full and the instance holding
    // more gives one back (the request already in the backlog waits there
    // for the next worker to free); never more than one per instance.
    const INSTANCES: u32 = 2;
    let answers = results(handles);
    let (most, seen) = sampler.finish();
    assert!(
        answers
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.status == 200)),
        "every request is served: {answers:?}"
    );
    for (node, m) in ["a", "b"].iter().zip(&most) {
        assert!(
            m.established <= SHARED_WORKERS + INSTANCES && m.backlog <= INSTANCES,
            "node {node}: {m:?} (more than one connection per instance over its {SHARED_WORKERS} workers):\n{seen}"
        );
    }
    // Both instances' requests were served by the nodes, each instance's
    // by both nodes' workers in turn (the shares moved between them).
    wait_for(|| begun(&[&a, &b]).len() == 2 * per);
    let ids: Vec<usize> = begun(&[&a, &b]).into_iter().map(|(_, id)| id).collect();
    assert!(ids.iter().any(|i| i % 2 == 0) && ids.iter().any(|i| i % 2 == 1));
    for wc in [&one, &two] {
        let s = wc.status();
        assert_eq!(group(&s)["queue"]["length"], 0);
    }
}
