//! Live load feedback end to end: the real `webcluster` binary in front of
//! real Apache httpd (prefork and event) and nginx nodes, each scraped through
//! its own status page.
//!
//! What is checked (issue 3):
//! 1. the busy counts the proxy reads match requests held open on the node;
//! 2. a node made busy by traffic that does not pass through the proxy gets a
//!    clear minority of new requests with `busyness`, a third with round robin;
//! 3. a node whose status page stops answering goes `down` after `fall`
//!    failures and comes back after `rise`; a status page that answers 403
//!    marks the node down with a reason;
//! 4. on prefork nodes, a node whose workers are all taken by other traffic
//!    gets no request through the proxy (none waits in its backlog), and
//!    with `upstream_keepalive = "on"` no pooled connection holds a worker
//!    that a request of the proxy's waits for;
//! 5. a node whose status source stops answering (but still serves) turns
//!    `stale` and keeps getting requests;
//! 6. a node coming back ramps up through slow start.
//!
//! No assertion is about a duration: waits are polls with generous bounds,
//! and the assertions are about outcomes (states, counts, status codes).

mod support;

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::webcluster::{base_config, group_config, node, Webcluster};
use support::{http_get, ApacheNode, ApacheOpts, NginxNode, NginxOpts};

/// A `[[group]]` scraped every 200 ms, with the given group keys and nodes as
/// (name, address, extra node keys).
fn group<N: AsRef<str>>(extra: &str, nodes: &[(N, SocketAddr, String)]) -> String {
    let nodes: Vec<(&str, SocketAddr, &str)> = nodes
        .iter()
        .map(|(n, addr, more)| (n.as_ref(), *addr, more.as_str()))
        .collect();
    group_config("web", extra, &nodes)
}

/// (name, address, no extra keys) for each node.
fn apache_nodes(nodes: &[&ApacheNode]) -> Vec<(String, SocketAddr, String)> {
    nodes
        .iter()
        .map(|n| (n.name().to_string(), n.addr(), String::new()))
        .collect()
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `n` threads each doing one direct `GET path` on `addr` (not through the
/// proxy); each returns the status code (0 on an I/O error).
fn hold(addr: SocketAddr, path: &str, n: usize) -> Vec<JoinHandle<u16>> {
    (0..n)
        .map(|_| {
            let path = path.to_string();
            thread::spawn(move || http_get(addr, &path, &[]).map_or(0, |r| r.status))
        })
        .collect()
}

/// Background traffic straight to a node: `threads` threads looping
/// `GET path` until the returned flag is set (and at most `limit`).
struct Loops {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Loops {
    fn start(addr: SocketAddr, path: &str, threads: usize, limit: Duration) -> Loops {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + limit;
        let handles = (0..threads)
            .map(|_| {
                let (stop, path) = (Arc::clone(&stop), path.to_string());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let _ = http_get(addr, &path, &[]);
                    }
                })
            })
            .collect();
        Loops { stop, handles }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// One `GET path` through `addr` on a fresh connection whose read and write
/// timeouts are `timeout`. Returns (status, answering node from the
/// `X-Webcluster-Node` header).
fn get_with_timeout(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut w = stream.try_clone()?;
    write!(
        w,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: load-feedback-test\r\nConnection: close\r\n\r\n"
    )?;
    w.flush()?;
    let resp = support::http::read_response(&mut BufReader::new(stream), "GET")?;
    let who = resp.header("x-webcluster-node").unwrap_or("-").to_string();
    Ok((resp.status, who))
}

/// `threads` x `per_thread` requests through the proxy; every outcome, as
/// Ok((status, node)) or Err(description).
fn burst(
    proxy: SocketAddr,
    path: &str,
    threads: usize,
    per_thread: usize,
    timeout: Duration,
) -> Vec<Result<(u16, String), String>> {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let path = path.to_string();
            thread::spawn(move || {
                (0..per_thread)
                    .map(|_| get_with_timeout(proxy, &path, timeout).map_err(|e| e.to_string()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("burst thread"))
        .collect()
}

/// Requests per answering node; panics unless every request got a 200.
fn tally(outcomes: &[Result<(u16, String), String>]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for o in outcomes {
        match o {
            Ok((200, who)) => *counts.entry(who.clone()).or_insert(0) += 1,
            other => panic!("a request through the proxy failed: {other:?}\nall: {outcomes:?}"),
        }
    }
    counts
}

// ---------------------------------------------------------------- 1. busy counts

/// Holds `k` `/sleep` requests on an Apache node directly and checks what the
/// proxy reads from its status page, then that busy goes back down.
fn apache_busy_counts_match(opts: ApacheOpts, mpm: &str) {
    const K: u64 = 4;
    let max = u64::from(opts.max_workers);
    let apache = ApacheNode::start(opts);
    let name = apache.name().to_string();
    let wc =
        Webcluster::start(|l, a| base_config(l, a, "") + &group("", &apache_nodes(&[&apache])));
    let s = wc.wait_all_up();
    let n = node(&s, &name);
    assert_eq!(n["server_kind"], "apache", "{n:#}");
    assert_eq!(n["mpm"], mpm, "{n:#}");
    assert!(
        n["server_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("Apache")),
        "{n:#}"
    );
    assert!(n["node_accesses_total"].is_u64(), "{n:#}");
    let accesses_before = u64_of(&n["node_accesses_total"]);

    let held = hold(apache.addr(), "/sleep?ms=1500", K as usize);
    // The status request counts itself as busy: K + 1.
    let s = wc.wait_status(&format!("{name} busy_workers >= {}", K + 1), |s| {
        u64_of(&node(s, &name)["busy_workers"]) > K
    });
    let n = node(&s, &name);
    let (busy, idle, cap) = (
        u64_of(&n["busy_workers"]),
        u64_of(&n["idle_workers"]),
        u64_of(&n["capacity"]),
    );
    assert_eq!(cap, max, "capacity is MaxRequestWorkers: {n:#}");
    assert!(n["idle_workers"].is_u64(), "{n:#}");
    assert!(busy + idle <= cap, "busy + idle above capacity: {n:#}");
    // Every worker is started in the test nodes (StartServers / ThreadsPerChild
    // = max): the slots not busy are idle.
    assert_eq!(busy + idle, cap, "{n:#}");
    let scoreboard = n["scoreboard"].as_str().unwrap_or_default();
    assert_eq!(scoreboard.len() as u64, cap, "{n:#}");

    for h in held {
        assert_eq!(h.join().expect("hold thread"), 200);
    }
    let s = wc.wait_status(&format!("{name} busy back down"), |s| {
        u64_of(&node(s, &name)["busy_workers"]) <= 2
            && u64_of(&node(s, &name)["node_accesses_total"]) >= accesses_before + K
    });
    let n = node(&s, &name);
    assert_eq!(
        u64_of(&n["busy_workers"]) + u64_of(&n["idle_workers"]),
        cap,
        "{n:#}"
    );
}

#[test]
fn busy_counts_match_apache_prefork() {
    apache_busy_counts_match(ApacheOpts::prefork("pre", 8), "prefork");
}

#[test]
fn busy_counts_match_apache_event() {
    apache_busy_counts_match(ApacheOpts::event("evt", 8), "event");
}

#[test]
fn busy_counts_match_nginx() {
    const K: u64 = 4;
    let nginx = NginxNode::start(NginxOpts::named("ngx"));
    let more = format!(
        "status_url = \"{}\"\n  status_kind = \"nginx\"\n  max_workers = 64",
        nginx.status_url()
    );
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "") + &group("", &[("ngx", nginx.addr(), more.clone())])
    });
    let s = wc.wait_all_up();
    let n = node(&s, "ngx");
    assert_eq!(n["server_kind"], "nginx", "{n:#}");
    assert_eq!(n["capacity"], 64, "configured max_workers: {n:#}");
    assert!(n["node_accesses_total"].is_u64(), "{n:#}");
    let accesses_before = u64_of(&n["node_accesses_total"]);

    // nginx has no /sleep: a request whose header is not finished yet is
    // "Reading" (busy) for stub_status until it completes.
    let mut held: Vec<TcpStream> = (0..K)
        .map(|_| {
            let mut c = support::http::connect(nginx.addr()).expect("connect to nginx");
            c.write_all(b"GET /node HTTP/1.1\r\nHost: ngx\r\n")
                .expect("send a partial request");
            c
        })
        .collect();
    let s = wc.wait_status(&format!("ngx busy_workers >= {}", K + 1), |s| {
        u64_of(&node(s, "ngx")["busy_workers"]) > K
    });
    let n = node(&s, "ngx");
    assert_eq!(n["capacity"], 64, "{n:#}");
    // stub_status has no idle figure.
    assert!(n["idle_workers"].is_null(), "{n:#}");

    // Finish the requests: busy goes back down.
    for c in &mut held {
        c.write_all(b"Connection: close\r\n\r\n")
            .expect("finish the request");
    }
    for c in held {
        let resp = support::http::read_response(&mut BufReader::new(c), "GET")
            .expect("nginx answers the held request");
        assert_eq!(resp.body, "ngx");
    }
    wc.wait_status("ngx busy back down", |s| {
        u64_of(&node(s, "ngx")["busy_workers"]) <= 1
            && u64_of(&node(s, "ngx")["node_accesses_total"]) >= accesses_before + K
    });
}

// ---------------------------------------------------------------- 2. steering

/// Three prefork nodes, `a` kept busy by direct traffic on `hidden` of its 8
/// workers; 60 requests through the proxy. Returns the requests per node.
fn share_with_one_busy_node(balance: &str, hidden: usize) -> HashMap<String, usize> {
    let a = ApacheNode::start(ApacheOpts::prefork("a", 8));
    let b = ApacheNode::start(ApacheOpts::prefork("b", 8));
    let c = ApacheNode::start(ApacheOpts::prefork("c", 8));
    let wc = Webcluster::start(|l, adm| {
        base_config(l, adm, "")
            + &group(
                &format!("balance = \"{balance}\""),
                &apache_nodes(&[&a, &b, &c]),
            )
    });
    wc.wait_all_up();
    let loops = Loops::start(a.addr(), "/sleep?ms=300", hidden, Duration::from_secs(60));
    wc.wait_status("a shows the direct traffic", |s| {
        u64_of(&node(s, "a")["busy_workers"]) >= hidden as u64
    });
    let outcomes = burst(wc.listen, "/sleep?ms=50", 4, 15, support::http::TIMEOUT);
    loops.finish();
    let counts = tally(&outcomes);
    assert_eq!(counts.values().sum::<usize>(), 60, "{counts:?}");
    counts
}

#[test]
fn busyness_steers_away_from_a_node_busy_with_other_traffic() {
    let counts = share_with_one_busy_node("busyness", 6);
    let busy = counts.get("a").copied().unwrap_or(0);
    assert!(
        busy * 100 < 15 * 60,
        "the busy node got {busy} of 60 requests (want < 15%): {counts:?}"
    );
    for n in ["b", "c"] {
        assert!(counts.get(n).copied().unwrap_or(0) >= 15, "{counts:?}");
    }
}

/// Round robin ignores load, as long as the node has free workers for its
/// share: with 4 of `a`'s 8 workers busy, its limit (3: the free workers but
/// the status request's) is above the one or two requests round robin has
/// there at once. (A node with no free worker left gets none: its share
/// goes to the others, as with HAProxy's `maxconn`; `tests/queue.rs`.)
#[test]
fn round_robin_does_not_steer_away_from_a_busy_node() {
    let counts = share_with_one_busy_node("round_robin", 4);
    let busy = counts.get("a").copied().unwrap_or(0);
    assert!(
        busy * 100 >= 25 * 60,
        "round robin gave the busy node only {busy} of 60: {counts:?}"
    );
}

// ---------------------------------------------------------------- 3. fall / rise

#[test]
fn frozen_node_goes_down_after_fall_and_returns_after_rise() {
    let a = ApacheNode::start(ApacheOpts::prefork("a", 8));
    let b = ApacheNode::start(ApacheOpts::prefork("b", 8));
    let c = ApacheNode::start(ApacheOpts::event("c", 8));
    let wc = Webcluster::start(|l, adm| {
        base_config(l, adm, "") + &group("fall = 2\nrise = 2", &apache_nodes(&[&a, &b, &c]))
    });
    let s = wc.wait_all_up();
    let failures_before = u64_of(&node(&s, "a")["scrape_failures_total"]);

    a.freeze();
    // Held back at once when its status page stops answering in time...
    let s = wc.wait_status("a held back", |s| node(s, "a")["state"] == "down");
    let n = node(&s, "a");
    let reason = n["down_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("held back") || reason.contains("status checks failed"),
        "{n:#}"
    );
    // ... and down after `fall` failed checks in a row.
    let s = wc.wait_status("a down", |s| {
        node(s, "a")["down_reason"]
            .as_str()
            .is_some_and(|r| r.contains("status checks failed"))
    });
    let n = node(&s, "a");
    let error = n["last_scrape_error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{n:#}");
    assert!(
        u64_of(&n["scrape_failures_total"]) >= failures_before + 2,
        "{n:#}"
    );
    // Meanwhile every request goes to the others.
    let counts = tally(&burst(wc.listen, "/node", 2, 10, support::http::TIMEOUT));
    assert_eq!(counts.get("a"), None, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 20, "{counts:?}");

    a.thaw();
    let s = wc.wait_status("a up again", |s| node(s, "a")["state"] == "up");
    let n = node(&s, "a");
    assert!(n["down_reason"].is_null(), "{n:#}");
    assert!(n["last_scrape_error"].is_null(), "{n:#}");
}

#[test]
fn status_page_answering_403_marks_the_node_down_with_the_reason() {
    let mut opts = ApacheOpts::prefork("denied", 4);
    opts.allow_status_from = vec!["127.0.0.9".to_string()];
    let denied = ApacheNode::start(opts);
    let ok = ApacheNode::start(ApacheOpts::prefork("ok", 4));
    let wc = Webcluster::start(|l, adm| {
        base_config(l, adm, "") + &group("fall = 2\nrise = 2", &apache_nodes(&[&denied, &ok]))
    });
    let s = wc.wait_status("denied down, ok up", |s| {
        node(s, "denied")["state"] == "down" && node(s, "ok")["state"] == "up"
    });
    let n = node(&s, "denied");
    let reason = n["down_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("403"), "{n:#}");
    let error = n["last_scrape_error"].as_str().unwrap_or_default();
    assert!(error.contains("403"), "{n:#}");
    // The proxy keeps working and sends everything to the healthy node.
    let counts = tally(&burst(wc.listen, "/node", 2, 5, support::http::TIMEOUT));
    assert_eq!(counts.get("ok"), Some(&10), "{counts:?}");
    assert!(!wc.log().contains("panicked"), "{}", wc.log());
}

// ---------------------------------------------------------------- 4. no hang

#[test]
fn no_request_waits_in_the_backlog_of_a_full_prefork_node() {
    let a = ApacheNode::start(ApacheOpts::prefork("a", 4));
    let b = ApacheNode::start(ApacheOpts::prefork("b", 4));
    let c = ApacheNode::start(ApacheOpts::prefork("c", 4));
    let wc = Webcluster::start(|l, adm| {
        base_config(l, adm, "") + &group("", &apache_nodes(&[&a, &b, &c]))
    });
    wc.wait_all_up();

    // Traffic through the proxy first. On prefork every open connection
    // holds a worker, idle keep-alive ones too (`K` on the scoreboard): the
    // proxy keeps connections to such a node only within the node's limit
    // (its workers but the one the status request takes: 3 of these four),
    // and lets them go after a second idle.
    tally(&burst(
        wc.listen,
        "/sleep?ms=100",
        6,
        4,
        support::http::TIMEOUT,
    ));
    let idle_conns = |n: &ApacheNode| {
        let page = support::capture_status(n.addr(), n.status_path());
        let board = support::scoreboard(&page).unwrap_or_default().to_string();
        (board.matches('K').count(), board)
    };
    for n in [&a, &b, &c] {
        let (k, board) = idle_conns(n);
        assert!(
            k <= 3,
            "{}: {k} keep-alive connections left after the proxy's requests, \
             more than the node's limit (scoreboard {board:?})",
            n.name()
        );
    }
    support::wait_until(
        "the proxy's idle connections to the prefork nodes closed",
        Duration::from_secs(10),
        || [&a, &b, &c].iter().all(|n| idle_conns(n).0 <= 1),
    );

    // Take every worker of `a` with direct traffic (as many requests as it
    // has workers: with the one the scraper's connection holds, one of them
    // even waits in the backlog).
    const HOLD_MS: u64 = 10_000;
    let scrapes_before = u64_of(&node(&wc.status(), "a")["scrapes_total"]);
    let held = hold(a.addr(), &format!("/sleep?ms={HOLD_MS}"), 4);
    // Full as seen by a scrape taken after the holds began, with nothing of
    // the proxy's own in flight there.
    wc.wait_status("a full of direct traffic", |s| {
        let n = node(s, "a");
        u64_of(&n["scrapes_total"]) >= scrapes_before + 2
            && n["idle_workers"] == 0
            && n["busy_workers"] == n["capacity"]
            && n["inflight"] == 0
    });

    // 6 clients: as many as `b` and `c` have workers free (4 each, less the
    // scraper's), so at times they are full too; a request must then still
    // not go to `a`, full of traffic that may stay for long.
    //
    // Not a timing assertion: a request sent to `a` now would sit in its
    // listen backlog until one of the 10 s sleeps ends, so it could not
    // complete while the holds run. The client timeout (2.5 s) only bounds
    // how long such a stuck request is waited for. The assertions: every
    // request got a 200, and the holds were still running when the burst was
    // over (so `a` was full during the whole burst).
    let outcomes = burst(
        wc.listen,
        "/sleep?ms=100",
        6,
        4,
        Duration::from_millis(2500),
    );
    let holds_running = held.iter().filter(|h| !h.is_finished()).count();
    let counts = tally(&outcomes);
    assert_eq!(counts.values().sum::<usize>(), 24, "{counts:?}");
    assert_eq!(counts.get("a"), None, "{counts:?}");
    assert!(
        holds_running > 0,
        "the burst outlasted the holds on `a`; the test proves nothing: {counts:?}"
    );
    for h in held {
        let _ = h.join();
    }
}

/// `upstream_keepalive = "on"` keeps connections to a prefork node, but not
/// while the node has more of the proxy's requests than workers: those
/// requests wait in its backlog for a worker, which an idle pooled connection
/// would go on holding.
#[test]
fn keepalive_on_lets_go_of_prefork_workers_that_requests_wait_for() {
    // KeepAliveTimeout and the proxy's idle timeout far above the client
    // timeout: a worker held by an idle pooled connection stays held for the
    // whole test.
    let mut opts = ApacheOpts::prefork("a", 4);
    opts.keepalive_timeout_secs = 60;
    let a = ApacheNode::start(opts);
    let wc = Webcluster::start(|l, adm| {
        base_config(l, adm, "")
            + "[timeouts]\nidle = \"60s\"\n\n"
            + &group("upstream_keepalive = \"on\"", &apache_nodes(&[&a]))
    });
    wc.wait_all_up();

    // 8 visitors at once on a node with 4 workers, one of them held by the
    // scraper's connection: 5 of the proxy's connections wait in the
    // node's backlog. Pooling the first 3 after their answers would keep
    // every worker taken while those 5 wait (until the 60 s idle timeouts);
    // closing them serves the 5 in the next two rounds of 300 ms.
    //
    // Not a timing assertion: the outcome is every request answered (200)
    // within a 10 s client timeout, against requests stuck for 60 s.
    let outcomes = burst(wc.listen, "/sleep?ms=300", 8, 1, Duration::from_secs(10));
    let counts = tally(&outcomes);
    assert_eq!(counts.get("a"), Some(&8), "{counts:?}");

    // Without the overload the connections stay open: with nothing in
    // flight, the node shows the scraper's worker and at least one held by
    // an idle connection of the proxy's (`K`). Read through the proxy's
    // scrapes: a direct read of the status page would wait for a worker,
    // since "on" may keep every one of them.
    wc.wait_status(
        "an idle pooled connection of the proxy's on the node",
        |s| {
            let n = node(s, "a");
            n["inflight"] == 0 && u64_of(&n["busy_workers"]) >= 2
        },
    );
}

// ---------------------------------------------------------------- 5. stale

#[test]
fn node_whose_status_source_stops_turns_stale_and_keeps_serving() {
    let mut source = ApacheNode::start(ApacheOpts::event("source", 4));
    let x = ApacheNode::start(ApacheOpts::prefork("x", 8));
    let y = ApacheNode::start(ApacheOpts::prefork("y", 8));
    let nodes = vec![
        (
            "x",
            x.addr(),
            format!("status_url = \"{}\"", source.status_url()),
        ),
        ("y", y.addr(), String::new()),
    ];
    let wc = Webcluster::start(|l, adm| {
        base_config(l, adm, "") + &group("fall = 100\nstale_after = 3", &nodes)
    });
    wc.wait_all_up();

    source.stop();
    let s = wc.wait_status("x stale", |s| node(s, "x")["state"] == "stale");
    let n = node(&s, "x");
    assert!(
        n["last_scrape_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{n:#}"
    );
    assert!(n["down_reason"].is_null(), "{n:#}");
    assert_eq!(node(&s, "y")["state"], "up", "{s:#}");

    let counts = tally(&burst(wc.listen, "/node", 2, 15, support::http::TIMEOUT));
    assert_eq!(counts.values().sum::<usize>(), 30, "{counts:?}");
    assert!(
        counts.get("x").copied().unwrap_or(0) >= 5,
        "the stale node should still get requests: {counts:?}"
    );
    assert!(
        counts.get("y").copied().unwrap_or(0) >= 5,
        "the fresh node should still get requests: {counts:?}"
    );
    let s = wc.status();
    assert_eq!(node(&s, "x")["state"], "stale", "{s:#}");
}

// ---------------------------------------------------------------- 6. slow start

#[test]
fn node_coming_back_ramps_up_through_slow_start() {
    let a = ApacheNode::start(ApacheOpts::prefork("a", 4));
    let b = ApacheNode::start(ApacheOpts::prefork("b", 4));
    let nodes = vec![
        ("a", a.addr(), "weight = 10".to_string()),
        ("b", b.addr(), "weight = 10".to_string()),
    ];
    let wc = Webcluster::start(|l, adm| {
        base_config(l, adm, "") + &group("fall = 2\nrise = 2\nslow_start = \"30s\"", &nodes)
    });
    let s = wc.wait_all_up();
    // Nodes present from the start are not ramped.
    assert_eq!(node(&s, "a")["effective_weight"], 10.0, "{s:#}");

    a.freeze();
    wc.wait_status("a down", |s| {
        node(s, "a")["down_reason"]
            .as_str()
            .is_some_and(|r| r.contains("status checks failed"))
    });
    a.thaw();
    let s = wc.wait_status("a up again", |s| node(s, "a")["state"] == "up");
    let n = node(&s, "a");
    assert_eq!(n["weight"], 10, "{n:#}");
    let effective = n["effective_weight"].as_f64().unwrap_or(f64::NAN);
    assert!(
        effective > 0.0 && effective < 10.0,
        "slow start should show a reduced weight right after coming back: {n:#}"
    );
    assert_eq!(node(&s, "b")["effective_weight"], 10.0, "{s:#}");
}
