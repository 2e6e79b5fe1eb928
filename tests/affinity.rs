//! Session affinity and tolerance of content sync lag (issue 7), end to end:
//! the real binary in front of real Apache nodes.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs;

use support::webcluster::{base_config, group_config, node, Webcluster};
use support::{http_get, http_request, ApacheNode, ApacheOpts, KeepAliveClient};

const NODE_HEADER: &str = "X-Webcluster-Node";

/// Prefork nodes with 32 workers: enough that the workers held by idle
/// keep-alive connections (which Apache counts as busy) never make a node
/// look saturated, which would legitimately move a session.
fn apache_nodes(names: &[&str]) -> Vec<ApacheNode> {
    apache_nodes_with(names, 32)
}

fn apache_nodes_with(names: &[&str], workers: u32) -> Vec<ApacheNode> {
    names
        .iter()
        .map(|n| ApacheNode::start(ApacheOpts::prefork(n, workers)))
        .collect()
}

/// A `[[group]]` "web" over `nodes` (in that order) with `extra` group keys.
fn group(extra: &str, nodes: &[&ApacheNode]) -> String {
    let nodes: Vec<(&str, std::net::SocketAddr, &str)> =
        nodes.iter().map(|n| (n.name(), n.addr(), "")).collect();
    group_config("web", &format!("fall = 3\n{extra}"), &nodes)
}

fn start(extra_group: &str, nodes: &[&ApacheNode], routes: &str) -> Webcluster {
    let text = format!("{}{routes}", group(extra_group, nodes));
    let wc = Webcluster::start(|listen, admin| format!("{}{text}", base_config(listen, admin, "")));
    wc.wait_all_up();
    wc
}

fn served_by(r: &support::Response) -> String {
    r.header(NODE_HEADER)
        .unwrap_or_else(|| panic!("no {NODE_HEADER} in {r:?}"))
        .to_string()
}

/// The node that serves `GET /node` for session `id` (PHPSESSID cookie).
fn session_node(wc: &Webcluster, id: &str) -> String {
    let cookie = format!("PHPSESSID={id}");
    let r = http_get(wc.listen, "/node", &[("Cookie", &cookie)]).expect("GET /node");
    assert_eq!(r.status, 200, "{r:?}");
    served_by(&r)
}

fn metrics(wc: &Webcluster) -> String {
    let r = http_get(wc.admin, "/metrics", &[]).expect("GET /metrics");
    assert_eq!(r.status, 200);
    r.body
}

/// The value of the metric line that starts with `series` (0 if absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn web_group(status: &serde_json::Value) -> serde_json::Value {
    status["groups"][0].clone()
}

fn affinity_node(status: &serde_json::Value, name: &str) -> serde_json::Value {
    web_group(status)["affinity"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn cookie_sessions_stay_on_one_node_across_requests_and_connections() {
    let nodes = apache_nodes(&["a", "b", "c"]);
    let refs: Vec<&ApacheNode> = nodes.iter().collect();
    let wc = start("affinity = \"cookie\"", &refs, "");

    let mut homes: HashMap<String, usize> = HashMap::new();
    for s in 0..12 {
        let id = format!("sess{s}x{}", s * 7919);
        let cookie = format!("other=1; PHPSESSID={id}; lang=en");
        let mut seen: Vec<String> = Vec::new();
        for _conn in 0..3 {
            let mut c = KeepAliveClient::connect(wc.listen).expect("connect");
            for _ in 0..5 {
                let r = c.get("/node", &[("Cookie", &cookie)]).expect("GET /node");
                assert_eq!(r.status, 200, "{r:?}");
                seen.push(served_by(&r));
            }
        }
        assert!(
            seen.iter().all(|n| *n == seen[0]),
            "session {id} was served by {seen:?}"
        );
        *homes.entry(seen[0].clone()).or_default() += 1;
    }
    assert!(homes.len() >= 2, "12 sessions all on one node: {homes:?}");

    // Without a session cookie: balanced by load (the busyness balancer
    // also counts the workers held by keep-alive connections, so not
    // necessarily over every node right after the sessions above).
    let mut spread: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let r = http_get(wc.listen, "/node", &[]).expect("GET /node");
        *spread.entry(served_by(&r)).or_default() += 1;
    }
    assert!(spread.len() >= 2, "requests without a session: {spread:?}");

    let status = wc.status();
    let a = &web_group(&status)["affinity"];
    assert_eq!(a["mode"], "cookie");
    assert_eq!(a["strict"], false);
    assert_eq!(a["cookies"][0], "PHPSESSID");
    assert_eq!(a["session_requests_total"], 12 * 15);
    assert_eq!(a["switches_total"]["down"], 0);
    let per_node: u64 = ["a", "b", "c"]
        .iter()
        .map(|n| {
            affinity_node(&status, n)["session_requests_total"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(per_node, 12 * 15);
}

/// Two instances (nodes listed in different orders) agree on every session;
/// stopping a node moves its sessions, and only its sessions.
#[test]
fn two_instances_agree_and_a_stopped_node_moves_only_its_sessions() {
    let mut nodes = apache_nodes(&["a", "b", "c"]);
    let (na, nb, nc) = (&nodes[0], &nodes[1], &nodes[2]);
    let wc1 = start("affinity = \"cookie\"", &[na, nb, nc], "");
    let wc2 = start("affinity = \"cookie\"", &[nc, na, nb], "");

    let ids: Vec<String> = (0..50)
        .map(|i| format!("{:x}", 0x9e37_79b9u64 * (i + 1)))
        .collect();
    let before: BTreeMap<&str, String> = ids
        .iter()
        .map(|id| (id.as_str(), session_node(&wc1, id)))
        .collect();
    for id in &ids {
        assert_eq!(
            session_node(&wc2, id),
            before[id.as_str()],
            "the two instances disagree on session {id}"
        );
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in before.values() {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "50 sessions not on all nodes: {counts:?}");

    // Stop b; both instances see it down.
    let stopped = "b";
    nodes[1].stop();
    for wc in [&wc1, &wc2] {
        wc.wait_status("b down", |s| node(s, stopped)["state"] == "down");
    }
    let mut moved = 0;
    for id in &ids {
        let after1 = session_node(&wc1, id);
        let after2 = session_node(&wc2, id);
        assert_eq!(
            after1, after2,
            "instances disagree on session {id} after the stop"
        );
        if before[id.as_str()] == stopped {
            assert_ne!(after1, stopped);
            moved += 1;
        } else {
            assert_eq!(
                after1,
                before[id.as_str()],
                "session {id} moved off a live node"
            );
        }
    }
    assert_eq!(moved, counts[stopped]);

    // Visible in the status JSON and the metrics.
    for wc in [&wc1, &wc2] {
        let status = wc.status();
        let a = &web_group(&status)["affinity"];
        assert_eq!(a["switches_total"]["down"], moved as u64, "{a:#}");
        assert_eq!(
            affinity_node(&status, stopped)["sessions_switched_total"],
            moved as u64
        );
        assert_eq!(affinity_node(&status, "a")["sessions_switched_total"], 0);
        let m = metrics(wc);
        assert_eq!(
            metric(
                &m,
                "webcluster_affinity_switches_total{group=\"web\",reason=\"down\"}"
            ),
            moved as f64,
            "{m}"
        );
    }

    // b comes back: its sessions return to it.
    nodes[1].restart();
    wc1.wait_status("b up", |s| node(s, stopped)["state"] == "up");
    for id in &ids {
        assert_eq!(session_node(&wc1, id), before[id.as_str()]);
    }
}

#[test]
fn strict_affinity_answers_503_when_the_session_node_is_down() {
    let mut nodes = apache_nodes(&["a", "b"]);
    let (na, nb) = (&nodes[0], &nodes[1]);
    let wc = start(
        "affinity = \"cookie\"\naffinity_strict = true",
        &[na, nb],
        "",
    );
    let ids: Vec<String> = (0..20).map(|i| format!("strict{i}")).collect();
    let homes: Vec<String> = ids.iter().map(|id| session_node(&wc, id)).collect();
    assert!(homes.iter().any(|h| h == "a") && homes.iter().any(|h| h == "b"));
    nodes[0].stop();
    wc.wait_status("a down", |s| node(s, "a")["state"] == "down");
    for (id, home) in ids.iter().zip(&homes) {
        let cookie = format!("PHPSESSID={id}");
        let r = http_get(wc.listen, "/node", &[("Cookie", &cookie)]).expect("GET");
        if home == "a" {
            assert_eq!(r.status, 503, "{r:?}");
            assert!(r.body.contains("\"a\""), "{}", r.body);
        } else {
            assert_eq!(r.status, 200);
            assert_eq!(served_by(&r), "b");
        }
    }
    let refused = homes.iter().filter(|h| *h == "a").count() as u64;
    let status = wc.status();
    assert_eq!(
        web_group(&status)["affinity"]["strict_refusals_total"],
        refused
    );
}

#[test]
fn insert_mode_sets_an_opaque_cookie_that_sticks() {
    let mut nodes = apache_nodes(&["a", "b", "c"]);
    let refs: Vec<&ApacheNode> = nodes.iter().collect();
    let wc = start("affinity = \"insert\"", &refs, "");
    let status = wc.status();
    let ids: HashMap<String, String> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let id = affinity_node(&status, n)["id"]
                .as_str()
                .unwrap()
                .to_string();
            (id, n.to_string())
        })
        .collect();
    assert_eq!(ids.len(), 3);

    let mut first_nodes = Vec::new();
    for _ in 0..6 {
        let r = http_get(wc.listen, "/node", &[]).expect("GET /node");
        assert_eq!(r.status, 200);
        let node_name = served_by(&r);
        let set = r.header("Set-Cookie").expect("a Set-Cookie").to_string();
        assert!(set.starts_with("WCNODE="), "{set}");
        assert!(set.contains("Path=/") && set.contains("HttpOnly") && set.contains("SameSite=Lax"));
        let value = set["WCNODE=".len()..]
            .split(';')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(
            ids.get(&value),
            Some(&node_name),
            "cookie {value} names {node_name}"
        );
        for n in &nodes {
            let addr = n.addr();
            assert!(
                !set.contains(&addr.port().to_string()),
                "{set} reveals {addr}"
            );
            assert!(!set.contains("127.0.0.1"), "{set}");
        }
        // The cookie sticks, with no new cookie.
        let cookie = format!("WCNODE={value}");
        let mut c = KeepAliveClient::connect(wc.listen).expect("connect");
        for _ in 0..10 {
            let r = c.get("/node", &[("Cookie", &cookie)]).expect("GET");
            assert_eq!(served_by(&r), node_name);
            assert!(r.header("Set-Cookie").is_none(), "{r:?}");
        }
        first_nodes.push((value, node_name));
    }

    // An unknown id: balanced, and a new cookie is set.
    let r = http_get(wc.listen, "/node", &[("Cookie", "WCNODE=0123456789abcdef")]).expect("GET");
    assert_eq!(r.status, 200);
    assert!(r
        .header("Set-Cookie")
        .is_some_and(|c| c.starts_with("WCNODE=")));

    // The session's node stops: the session moves and the cookie is rewritten.
    let (value, home) = first_nodes[0].clone();
    let i = ["a", "b", "c"].iter().position(|n| *n == home).unwrap();
    nodes[i].stop();
    wc.wait_status("home down", |s| node(s, &home)["state"] == "down");
    let cookie = format!("WCNODE={value}");
    let r = http_get(wc.listen, "/node", &[("Cookie", &cookie)]).expect("GET");
    assert_eq!(r.status, 200);
    let new_node = served_by(&r);
    assert_ne!(new_node, home);
    let set = r.header("Set-Cookie").expect("cookie rewritten");
    let new_value = set["WCNODE=".len()..].split(';').next().unwrap();
    assert_eq!(ids.get(new_value), Some(&new_node));

    let status = wc.status();
    let a = &web_group(&status)["affinity"];
    assert_eq!(a["mode"], "insert");
    assert_eq!(a["cookies"][0], "WCNODE");
    assert!(a["cookies_set_total"].as_u64().unwrap() >= 8, "{a:#}");
    assert_eq!(a["switches_total"]["down"], 1);
    assert!(a["session_requests_total"].as_u64().unwrap() >= 60);
}

/// Draining stops new sessions on a node; existing sessions keep going.
#[test]
fn draining_keeps_existing_sessions_only() {
    let nodes = apache_nodes(&["a", "b"]);
    let (na, nb) = (&nodes[0], &nodes[1]);
    let wc = start("affinity = \"cookie\"", &[na, nb], "");
    let ids: Vec<String> = (0..20).map(|i| format!("drain{i}")).collect();
    let homes: Vec<String> = ids.iter().map(|id| session_node(&wc, id)).collect();
    assert!(homes.iter().any(|h| h == "a"));
    // Drain a by reload.
    let text = fs::read_to_string(&wc.config_path).unwrap();
    let needle = format!("address = \"{}\"\n", na.addr());
    fs::write(
        &wc.config_path,
        text.replace(&needle, &format!("{needle}  drain = true\n")),
    )
    .unwrap();
    wc.signal(nix::sys::signal::Signal::SIGHUP);
    wc.wait_status("a draining", |s| node(s, "a")["state"] == "draining");
    for (id, home) in ids.iter().zip(&homes) {
        assert_eq!(&session_node(&wc, id), home, "session {id}");
    }
    for _ in 0..20 {
        let r = http_get(wc.listen, "/node", &[]).expect("GET");
        assert_eq!(
            served_by(&r),
            "b",
            "a new request went to the draining node"
        );
    }
}

/// A file present on one node only (sync lag) is served with retry_on_404.
#[test]
fn retry_on_404_serves_a_file_present_on_one_node_only() {
    let nodes = apache_nodes(&["a", "b", "c"]);
    let refs: Vec<&ApacheNode> = nodes.iter().collect();
    let upload = nodes[1].dir().join("htdocs/upload");
    fs::create_dir_all(&upload).unwrap();
    fs::write(upload.join("new.txt"), "fresh upload\n").unwrap();
    support::set_mode(&upload, 0o755);
    support::set_mode(&upload.join("new.txt"), 0o644);
    let routes = "[[route]]\nhost = \"noretry.test\"\ngroup = \"web\"\n\n\
                  [[route]]\npath = \"/upload/\"\ngroup = \"web\"\nretry_on_404 = true\n";
    let wc = start("", &refs, routes);

    for _ in 0..30 {
        let r = http_get(wc.listen, "/upload/new.txt", &[]).expect("GET");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, "fresh upload\n");
        assert_eq!(served_by(&r), "b");
        let r = http_request(wc.listen, "HEAD", "/upload/new.txt", &[], b"").expect("HEAD");
        assert_eq!(r.status, 200, "{r:?}");
    }
    // On keep-alive connections too.
    let mut c = KeepAliveClient::connect(wc.listen).expect("connect");
    for _ in 0..10 {
        let r = c.get("/upload/new.txt", &[]).expect("GET");
        assert_eq!(r.status, 200, "{r:?}");
        let r = c.get("/node", &[]).expect("GET");
        assert_eq!(r.status, 200, "{r:?}");
    }
    // Without retry_on_404 (other route), the lag shows: some requests land
    // on a node without the file.
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for _ in 0..30 {
        let r = http_get(wc.listen, "/upload/new.txt", &[("Host", "noretry.test")]).expect("GET");
        *codes.entry(r.status).or_default() += 1;
    }
    assert!(codes.contains_key(&404), "{codes:?}");
    // Missing everywhere: the node's 404 after trying every node, not a 502.
    let before = web_group(&wc.status())["content_sync"]["retry_on_404_total"]
        .as_u64()
        .unwrap();
    let r = http_get(wc.listen, "/upload/missing.txt", &[]).expect("GET");
    assert_eq!(r.status, 404, "{r:?}");
    let status = wc.status();
    let cs = &web_group(&status)["content_sync"];
    assert_eq!(
        cs["retry_on_404_total"].as_u64().unwrap(),
        before + 2,
        "{cs:#}"
    );
    assert_eq!(cs["retry_on_404"], true);
    assert!(cs["retry_on_404_recovered_total"].as_u64().unwrap() >= 1);
    let m = metrics(&wc);
    assert_eq!(
        metric(&m, "webcluster_retry_on_404_total{group=\"web\"}"),
        (before + 2) as f64
    );
    // A retried 404 is not a node failure.
    for n in ["a", "b", "c"] {
        assert_eq!(node(&status, n)["state"], "up");
    }
}

/// Writes go to the primary only; primary down: 503 for writes only.
#[test]
fn writes_reach_the_primary_only() {
    let mut nodes = apache_nodes(&["a", "b", "c"]);
    let refs: Vec<&ApacheNode> = nodes.iter().collect();
    let routes = "[[route]]\ngroup = \"web\"\nprimary = \"b\"\nwrite_paths = [\"/admin/\"]\n";
    let wc = start("", &refs, routes);

    for _ in 0..20 {
        let r = http_request(wc.listen, "POST", "/node", &[], b"x=1").expect("POST");
        assert_eq!(served_by(&r), "b", "{r:?}");
        let r = http_request(wc.listen, "PUT", "/node", &[], b"x").expect("PUT");
        assert_eq!(served_by(&r), "b", "{r:?}");
        let r = http_get(wc.listen, "/admin/index.php", &[]).expect("GET admin");
        assert_eq!(served_by(&r), "b", "{r:?}");
    }
    let mut reads: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let r = http_get(wc.listen, "/node", &[]).expect("GET");
        *reads.entry(served_by(&r)).or_default() += 1;
    }
    // Reads are balanced by load, not pinned to the primary (which may
    // look busier right after the writes).
    assert!(reads.len() >= 2, "reads are balanced: {reads:?}");

    nodes[1].stop();
    wc.wait_status("b down", |s| node(s, "b")["state"] == "down");
    let r = http_request(wc.listen, "POST", "/node", &[], b"x=1").expect("POST");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("write target"), "{}", r.body);
    assert!(r.body.contains("\"b\""), "{}", r.body);
    let r = http_get(wc.listen, "/admin/", &[]).expect("GET admin");
    assert_eq!(r.status, 503);
    let r = http_get(wc.listen, "/node", &[]).expect("GET");
    assert_eq!(r.status, 200);

    let status = wc.status();
    let cs = &web_group(&status)["content_sync"];
    assert_eq!(cs["primaries"][0], "b");
    assert_eq!(cs["primary_requests_total"], 60);
    assert_eq!(cs["primary_unavailable_total"], 2);
    let m = metrics(&wc);
    assert!(
        metric(
            &m,
            "webcluster_requests_total{code=\"5xx\",group=\"web\",node=\"-\"}"
        ) >= 2.0,
        "{m}"
    );
}

#[test]
fn primary_fallback_sends_writes_elsewhere() {
    let mut nodes = apache_nodes(&["a", "b"]);
    let refs: Vec<&ApacheNode> = nodes.iter().collect();
    let routes = "[[route]]\ngroup = \"web\"\nprimary = \"a\"\nprimary_fallback = true\n";
    let wc = start("", &refs, routes);
    let r = http_request(wc.listen, "POST", "/node", &[], b"x=1").expect("POST");
    assert_eq!(served_by(&r), "a");
    nodes[0].stop();
    wc.wait_status("a down", |s| node(s, "a")["state"] == "down");
    let r = http_request(wc.listen, "POST", "/node", &[], b"x=1").expect("POST");
    assert_eq!(served_by(&r), "b", "{r:?}");
    let status = wc.status();
    assert_eq!(
        web_group(&status)["content_sync"]["primary_fallback_total"],
        1
    );
}

/// A session whose node has every worker busy goes to the next node of its
/// order while that lasts, counted as `saturated`, then comes back.
#[test]
fn a_saturated_session_node_passes_the_request_on() {
    let nodes = apache_nodes_with(&["a", "b", "c"], 8);
    let refs: Vec<&ApacheNode> = nodes.iter().collect();
    let wc = start("affinity = \"cookie\"", &refs, "");
    let id = "busy-session";
    let home = session_node(&wc, id);
    // Wait for a scrape so the node's capacity (8 workers) is known.
    wc.wait_status("capacity known", |s| node(s, &home)["capacity"] == 8);
    let listen = wc.listen;
    // 12 slow requests of one session at once: the home node has 8 workers.
    let sleepers: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                let cookie = format!("PHPSESSID={id}");
                http_get(listen, "/sleep?ms=1500", &[("Cookie", &cookie)]).expect("sleep")
            })
        })
        .collect();
    let served: Vec<String> = sleepers
        .into_iter()
        .map(|s| {
            let r = s.join().expect("sleeper");
            assert_eq!(r.status, 200, "{r:?}");
            served_by(&r)
        })
        .collect();
    let at_home = served.iter().filter(|n| **n == home).count();
    let moved = served.len() - at_home;
    assert!(
        (4..=8).contains(&at_home) && moved >= 4,
        "home {home}, served by {served:?}"
    );
    wc.wait_status("home idle", |s| node(s, &home)["inflight"] == 0);
    assert_eq!(session_node(&wc, id), home, "the session came back");
    let status = wc.status();
    let a = &web_group(&status)["affinity"];
    assert_eq!(a["switches_total"]["saturated"], moved as u64, "{a:#}");
    assert_eq!(a["switches_total"]["down"], 0, "{a:#}");
    assert_eq!(
        affinity_node(&status, &home)["sessions_switched_total"],
        moved as u64
    );
    let m = metrics(&wc);
    assert_eq!(
        metric(
            &m,
            "webcluster_affinity_switches_total{group=\"web\",reason=\"saturated\"}"
        ),
        moved as f64
    );
}

/// Replace the node's `/status-code` CGI by a page that starts a session
/// (`Set-Cookie: PHPSESSID=...`, like PHP's session_start) when the request
/// has none, and answers the node's name.
fn install_session_page(n: &ApacheNode) {
    let script = n.dir().join("cgi-bin/status-code");
    let _ = fs::remove_file(&script);
    fs::write(
        &script,
        "#!/bin/sh\n\
         case \"${HTTP_COOKIE:-}\" in\n\
           *PHPSESSID=*) ;;\n\
           *) printf 'Set-Cookie: PHPSESSID=%s-%s-%s; path=/; HttpOnly\\r\\n' \"$NODE_NAME\" \"$$\" \"$(date +%N)\" ;;\n\
         esac\n\
         printf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         printf '%s\\n' \"$NODE_NAME\"\n",
    )
    .unwrap();
    support::set_mode(&script, 0o755);
}

/// The `name=value` pairs a response sets (first pair of each Set-Cookie).
fn set_cookies(r: &support::Response) -> Vec<(String, String)> {
    r.header_all("Set-Cookie")
        .iter()
        .filter_map(|c| {
            let (k, v) = c.split(';').next()?.split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// In cookie mode, the request that starts a session may run on any node
/// (there is no cookie yet to hash): the proxy pins the session to that
/// node when it is not the session's hash node, so what the application
/// stored there is not lost, and new sessions never land on a draining node.
#[test]
fn cookie_mode_keeps_a_new_session_on_the_node_that_created_it() {
    let nodes = apache_nodes(&["a", "b", "c"]);
    for n in &nodes {
        install_session_page(n);
    }
    let refs: Vec<&ApacheNode> = nodes.iter().collect();
    let wc = start("affinity = \"cookie\"", &refs, "");
    let wc2 = start(
        "affinity = \"cookie\"",
        &[&nodes[2], &nodes[0], &nodes[1]],
        "",
    );

    let new_sessions = |wc: &Webcluster, n: usize| -> (usize, Vec<(String, String)>) {
        let mut pinned = 0;
        let mut out = Vec::new();
        for _ in 0..n {
            let r = http_get(wc.listen, "/status-code", &[]).expect("GET");
            assert_eq!(r.status, 200, "{r:?}");
            let creator = served_by(&r);
            let cookies = set_cookies(&r);
            let sess = cookies
                .iter()
                .find(|(k, _)| k == "PHPSESSID")
                .expect("the node started a session")
                .1
                .clone();
            let mut jar = format!("PHPSESSID={sess}");
            if let Some((_, pin)) = cookies.iter().find(|(k, _)| k == "WCNODE") {
                assert!(!pin.contains("127.0.0.1"), "{pin}");
                pinned += 1;
                jar.push_str(&format!("; WCNODE={pin}"));
            }
            out.push((jar, creator));
        }
        (pinned, out)
    };

    let (pinned, sessions) = new_sessions(&wc, 30);
    assert!(pinned > 0 && pinned < 30, "{pinned} of 30 pinned");
    for (jar, creator) in &sessions {
        for w in [&wc, &wc2] {
            for _ in 0..3 {
                let r = http_get(w.listen, "/status-code", &[("Cookie", jar)]).expect("GET");
                assert_eq!(&served_by(&r), creator, "session {jar}");
                assert!(set_cookies(&r).is_empty(), "{r:?}");
            }
        }
    }
    let status = wc.status();
    assert_eq!(
        web_group(&status)["affinity"]["cookies_set_total"],
        pinned as u64
    );
    assert_eq!(web_group(&status)["affinity"]["switches_total"]["down"], 0);

    // Drain a: new sessions never land on it, existing ones stay.
    let text = fs::read_to_string(&wc.config_path).unwrap();
    let needle = format!("address = \"{}\"\n", nodes[0].addr());
    fs::write(
        &wc.config_path,
        text.replace(&needle, &format!("{needle}  drain = true\n")),
    )
    .unwrap();
    wc.signal(nix::sys::signal::Signal::SIGHUP);
    wc.wait_status("a draining", |s| node(s, "a")["state"] == "draining");
    let (_, fresh) = new_sessions(&wc, 30);
    for (jar, creator) in &fresh {
        assert_ne!(creator, "a");
        for _ in 0..3 {
            let r = http_get(wc.listen, "/status-code", &[("Cookie", jar)]).expect("GET");
            assert_eq!(
                &served_by(&r),
                creator,
                "new session {jar} while a drains: {:#}",
                web_group(&wc.status())
            );
        }
    }
    for (jar, creator) in &sessions {
        let r = http_get(wc.listen, "/status-code", &[("Cookie", jar)]).expect("GET");
        assert_eq!(
            &served_by(&r),
            creator,
            "existing session {jar} while a drains"
        );
    }
}
