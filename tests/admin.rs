//! The admin listener end to end (status page, `/status.json`, Apache
//! `?auto`, Prometheus `/metrics`, the allow list) and the status-page guard
//! of the proxy listener, against real Apache nodes; plus the page rendered
//! by headless Chromium (screenshot in the test output directory).

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::http::{connect, read_response};
use support::webcluster::{base_config, group_config as group, node, nodes, Webcluster};
use support::{http_get, http_get_from, http_request, ApacheNode, ApacheOpts, Response};

fn get(addr: SocketAddr, path: &str) -> Response {
    http_get(addr, path, &[]).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

fn get_ok(addr: SocketAddr, path: &str) -> Response {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "GET http://{addr}{path}: {}", r.body);
    r
}

/// Sends `raw` (a whole request, exact bytes) on a fresh connection and reads
/// one response (`method` tells whether a body follows).
fn raw_request(addr: SocketAddr, raw: &[u8], method: &str) -> std::io::Result<Response> {
    let mut stream = connect(addr)?;
    stream.write_all(raw)?;
    stream.flush()?;
    read_response(&mut BufReader::new(stream), method)
}

/// Opens a connection to the node and sends `GET /sleep?ms=<ms>` without
/// reading the answer: the node keeps one worker busy for `ms`. The CGI's
/// few bytes of output fit in the socket buffers, so the worker is freed
/// when the time is up, whether or not the connection is read.
fn hold_worker(node: SocketAddr, ms: u64) -> TcpStream {
    let mut s = connect(node).expect("connect to the node");
    write!(
        s,
        "GET /sleep?ms={ms} HTTP/1.1\r\nHost: {node}\r\nConnection: close\r\n\r\n"
    )
    .expect("send /sleep");
    s
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an unsigned number, got {v}"))
}

/// `Key: value` lines of an `?auto` page.
fn auto_map(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn auto_u64(m: &BTreeMap<String, String>, key: &str) -> u64 {
    m.get(key)
        .unwrap_or_else(|| panic!("?auto has no {key}: {m:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("?auto {key}: {e}"))
}

/// Per node (busy, idle, state) of a status JSON: what must stay put for two
/// snapshots taken around a third one to agree with it.
fn worker_view(s: &Value) -> Vec<(String, Value, Value, Value)> {
    nodes(s)
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_string(),
                n["busy_workers"].clone(),
                n["idle_workers"].clone(),
                n["state"].clone(),
            )
        })
        .collect()
}

fn sum(s: &Value, field: &str) -> u64 {
    nodes(s)
        .iter()
        .map(|n| n[field].as_u64().unwrap_or(0))
        .sum()
}

// ---------------------------------------------------------------- 1. numbers

#[test]
fn page_json_and_auto_show_real_apache_load() {
    const K: u64 = 3;
    let ev = ApacheNode::start(ApacheOpts::event("apache-event", 8));
    let pf = ApacheNode::start(ApacheOpts::prefork("apache-prefork", 6));
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group(
                "web",
                "",
                &[
                    ("apache-event", ev.addr(), ""),
                    ("apache-prefork", pf.addr(), ""),
                ],
            )
    });
    let s = wc.wait_all_up();
    for (name, mpm, cap) in [
        ("apache-event", "event", 8),
        ("apache-prefork", "prefork", 6),
    ] {
        let n = node(&s, name);
        assert_eq!(n["server_kind"], "apache", "{n:#}");
        assert_eq!(n["mpm"], mpm, "{n:#}");
        assert_eq!(n["capacity"], cap, "{n:#}");
    }

    // K requests held open directly on the prefork node, far longer than the
    // checks below need: the load is steady while they run.
    let _held: Vec<TcpStream> = (0..K).map(|_| hold_worker(pf.addr(), 60_000)).collect();
    // +1: the worker answering the scrape itself.
    let s = wc.wait_status("the prefork node shows the held requests", |s| {
        node(s, "apache-prefork")["busy_workers"]
            .as_u64()
            .is_some_and(|b| b > K)
    });
    let n = node(&s, "apache-prefork");
    assert!(u(&n["busy_workers"]) + u(&n["idle_workers"]) <= 6, "{n:#}");
    let sb = n["scoreboard"].as_str().expect("scoreboard");
    assert_eq!(sb.len(), 6, "{n:#}");
    assert!(sb.chars().filter(|c| *c == 'W').count() as u64 > K, "{n:#}");

    // `?auto` is one snapshot and the JSON another: compare ?auto with JSON
    // snapshots taken just before and just after it that agree on every
    // node's workers and state (a steady load), retrying (bounded) while
    // something moves.
    let mut compared = false;
    for _ in 0..100 {
        let before = wc.status();
        let auto = get_ok(wc.admin, "/server-status?auto");
        let after = wc.status();
        if worker_view(&before) != worker_view(&after)
            || nodes(&after).iter().any(|n| n["state"] != "up")
        {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        assert_eq!(
            auto.header("content-type"),
            Some("text/plain; charset=ISO-8859-1")
        );
        let m = auto_map(&auto.body);
        assert!(auto.body.starts_with("webcluster\n"), "{}", auto.body);
        assert_eq!(
            auto_u64(&m, "BusyWorkers"),
            sum(&after, "busy_workers"),
            "{}\n{after:#}",
            auto.body
        );
        assert!(auto_u64(&m, "BusyWorkers") > K + 1, "{}", auto.body);
        assert_eq!(
            auto_u64(&m, "IdleWorkers"),
            sum(&after, "idle_workers"),
            "{}\n{after:#}",
            auto.body
        );
        // Counters only grow: the ?auto value lies between the two JSON sums.
        let acc = auto_u64(&m, "Total Accesses");
        assert!(
            (sum(&before, "node_accesses_total")..=sum(&after, "node_accesses_total"))
                .contains(&acc),
            "Total Accesses {acc}\n{before:#}\n{after:#}"
        );
        let kb = auto_u64(&m, "Total kBytes");
        assert!(
            (sum(&before, "node_bytes_total") / 1024..=sum(&after, "node_bytes_total") / 1024)
                .contains(&kb),
            "Total kBytes {kb}\n{before:#}\n{after:#}"
        );
        assert_eq!(
            m.get("Scoreboard").map(String::len),
            Some(8 + 6),
            "{}",
            auto.body
        );
        assert_eq!(auto_u64(&m, "ClusterNodes"), 2, "{}", auto.body);
        assert_eq!(auto_u64(&m, "ClusterNodesUp"), 2, "{}", auto.body);
        assert_eq!(
            after["totals"]["busy_workers"],
            sum(&after, "busy_workers"),
            "{after:#}"
        );
        compared = true;
        break;
    }
    assert!(compared, "the cluster never held still for two snapshots");

    // The page: both nodes, their state and their worker numbers (same
    // sandwich: the numbers are those of JSON snapshots around it).
    let mut checked = false;
    for _ in 0..100 {
        let before = wc.status();
        let page = get_ok(wc.admin, "/");
        let after = wc.status();
        if worker_view(&before) != worker_view(&after) {
            continue;
        }
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        let html = &page.body;
        for name in ["apache-event", "apache-prefork"] {
            let n = node(&after, name);
            assert!(html.contains(&format!(">{name}<")), "no {name} on the page");
            let words = format!(
                "{} busy · {} idle / {}",
                u(&n["busy_workers"]),
                u(&n["idle_workers"]),
                u(&n["capacity"])
            );
            assert!(
                html.contains(&words),
                "no {words:?} for {name} on the page:\n{html}"
            );
            assert!(
                html.contains(n["address"].as_str().unwrap_or("?")),
                "{html}"
            );
        }
        assert!(
            html.contains("<span class=\"dot\"></span>up</span>"),
            "{html}"
        );
        assert!(!html.contains(">down<"), "{html}");
        // "2 / 2" nodes up, cluster busy total.
        assert!(html.contains("2<span class=\"of\"> / 2</span>"), "{html}");
        let busy = after["totals"]["busy_workers"].as_u64().unwrap_or(0);
        assert!(
            html.contains(&format!("{busy}<span class=\"of\"> busy</span>")),
            "cluster busy {busy} not on the page:\n{html}"
        );
        checked = true;
        break;
    }
    assert!(checked, "the cluster never held still for two snapshots");

    // JSON is also served at /?format=json.
    let r = get_ok(wc.admin, "/?format=json");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(nodes(&v).len(), 2);
}

// ---------------------------------------------------------------- 2. metrics

/// Runs `promtool check metrics` on `body`; returns (success, output).
fn promtool_check(body: &str) -> (bool, String) {
    support::require_installed("/usr/bin/promtool", "prometheus");
    let mut child = Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The sample line of `series` (name plus exact label set as printed), if any.
fn sample<'a>(body: &'a str, series: &str) -> Option<&'a str> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l[series.len()..].trim())
}

#[test]
fn metrics_pass_promtool_and_have_the_key_series() {
    let a = ApacheNode::start(ApacheOpts::event("a", 4));
    let mut b = ApacheNode::start(ApacheOpts::prefork("b", 3));
    let wc = Webcluster::start(|l, ad| {
        base_config(l, ad, "")
            + &group(
                "web",
                "balance = \"round_robin\"",
                &[("a", a.addr(), ""), ("b", b.addr(), "")],
            )
    });
    wc.wait_all_up();
    for _ in 0..6 {
        let r = get(wc.listen, "/node");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = get(wc.listen, "/no-such-page");
    assert_eq!(r.status, 404);
    let r = get(wc.listen, "/server-status");
    assert_eq!(r.status, 403);
    // A node that refuses connections: connect failures (and retries) that
    // still end in 200 from the other node.
    b.stop();
    for _ in 0..4 {
        let r = get(wc.listen, "/node");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body.trim(), "a");
    }
    wc.wait_status("b down, its scrapes failing", |s| {
        node(s, "b")["state"] == "down" && node(s, "b")["scrape_failures_total"].as_u64() >= Some(1)
    });

    let r = get_ok(wc.admin, "/metrics");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = r.body;
    fs::write(support::test_output_dir().join("metrics.txt"), &body).expect("save metrics");
    let (ok, out) = promtool_check(&body);
    assert!(
        ok,
        "promtool check metrics failed:\n{out}\n---- metrics ----\n{body}"
    );
    assert!(
        out.trim().is_empty(),
        "promtool check metrics has findings:\n{out}\n---- metrics ----\n{body}"
    );

    let expect = |series: &str, value: &str| {
        assert_eq!(sample(&body, series), Some(value), "{series}\n{body}");
    };
    let present = |series: &str| {
        assert!(sample(&body, series).is_some(), "no {series}\n{body}");
    };
    expect(r#"webcluster_node_up{group="web",node="a"}"#, "1");
    expect(r#"webcluster_node_up{group="web",node="b"}"#, "0");
    expect(
        r#"webcluster_node_state{group="web",node="b",state="down"}"#,
        "1",
    );
    expect(
        r#"webcluster_node_state{group="web",node="b",state="up"}"#,
        "0",
    );
    expect(
        r#"webcluster_node_capacity_workers{group="web",node="a"}"#,
        "4",
    );
    present(r#"webcluster_node_busy_workers{group="web",node="a"}"#);
    present(r#"webcluster_node_idle_workers{group="web",node="a"}"#);
    present(r#"webcluster_node_accesses_total{group="web",node="a"}"#);
    present(r#"webcluster_node_sent_bytes_total{group="web",node="a"}"#);
    present(r#"webcluster_node_scrape_duration_seconds{group="web",node="a"}"#);
    present(r#"webcluster_node_effective_weight{group="web",node="a"}"#);
    // the process, the build, and no current-looking load for a down node
    present("process_open_fds");
    present("process_max_fds");
    present("process_resident_memory_bytes");
    present("process_cpu_seconds_total");
    present("process_start_time_seconds");
    expect(
        &format!(
            r#"webcluster_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        ),
        "1",
    );
    expect("webcluster_config_last_reload_failed", "0");
    expect(r#"webcluster_node_status_fresh{group="web",node="b"}"#, "0");
    assert!(
        sample(
            &body,
            r#"webcluster_node_busy_workers{group="web",node="b"}"#
        )
        .is_none(),
        "a down node's busy workers exported as current\n{body}"
    );
    // every answer class of every node exists, at 0 when nothing came
    expect(
        r#"webcluster_requests_total{code="5xx",group="web",node="a"}"#,
        "0",
    );
    expect(
        r#"webcluster_requests_total{code="3xx",group="web",node="b"}"#,
        "0",
    );
    let failures = sample(
        &body,
        r#"webcluster_node_scrape_failures_total{group="web",node="b"}"#,
    )
    .and_then(|v| v.parse::<f64>().ok())
    .unwrap_or(0.0);
    assert!(failures >= 1.0, "{body}");
    // 6 + 4 answered 200, at least 3 of them by a.
    let ok_a: f64 = sample(
        &body,
        r#"webcluster_requests_total{code="2xx",group="web",node="a"}"#,
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(0.0);
    let ok_b: f64 = sample(
        &body,
        r#"webcluster_requests_total{code="2xx",group="web",node="b"}"#,
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(0.0);
    assert!(ok_a >= 7.0, "{body}");
    assert_eq!(ok_a + ok_b, 10.0, "{body}");
    let notfound = body
        .lines()
        .filter(|l| l.starts_with("webcluster_requests_total{code=\"4xx\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    // the 404 from a node and the 403 of the guard
    assert!(notfound >= 2.0, "{body}");
    expect("webcluster_denied_status_path_requests_total", "1");
    present(r#"webcluster_request_duration_seconds_bucket{group="web",node="a",le="+Inf"}"#);
    present(r#"webcluster_request_duration_seconds_count{group="web",node="a"}"#);
    present(r#"webcluster_request_duration_seconds_sum{group="web",node="a"}"#);
    let connect_failures: f64 = sample(
        &body,
        r#"webcluster_upstream_connect_failures_total{group="web",node="b"}"#,
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(0.0);
    assert!(connect_failures >= 1.0, "{body}");
    let retries: f64 = sample(&body, r#"webcluster_retries_total{group="web"}"#)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(retries >= 1.0, "{body}");
    // Known label values exist from the start, at 0.
    expect(r#"webcluster_config_reloads_total{result="success"}"#, "0");
    expect(r#"webcluster_config_reloads_total{result="failure"}"#, "0");
    present(r#"webcluster_no_usable_node_total{group="web"}"#);
    present("webcluster_config_last_reload_success_timestamp_seconds");
    assert!(
        body.lines()
            .any(|l| l.starts_with("webcluster_config_info{") && l.ends_with(" 1")),
        "{body}"
    );
    // No lifetime averages, no non-base units.
    for bad in ["per_second", "_milliseconds", "_kilobytes", "_kbytes"] {
        assert!(!body.contains(bad), "{bad} in\n{body}");
    }
}

// ------------------------------------------------- 2b. apache_exporter

const APACHE_EXPORTER: &str = "/usr/bin/prometheus-apache-exporter";

/// Debian's `prometheus-apache-exporter` scraping the admin listener's
/// cluster `?auto` page; killed when dropped.
struct Exporter {
    child: std::process::Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Exporter {
    /// Starts the exporter on a free port of 127.0.0.1 reading
    /// `http://<admin>/server-status?auto`, and waits (bounded) until it
    /// serves `apache_up 1`.
    fn start(admin: SocketAddr) -> Exporter {
        support::require_installed(APACHE_EXPORTER, "prometheus-apache-exporter");
        let addr = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let log = support::test_output_dir().join("apache-exporter.log");
        let out = fs::File::create(&log).expect("create the exporter log");
        let child = Command::new(APACHE_EXPORTER)
            .arg(format!("--scrape_uri=http://{admin}/server-status?auto"))
            .arg(format!("--telemetry.address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("dup the exporter log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start prometheus-apache-exporter");
        let mut e = Exporter { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = e.child.try_wait() {
                panic!("the exporter exited ({status}):\n{}", e.log());
            }
            if http_get(e.addr, "/metrics", &[])
                .is_ok_and(|r| r.status == 200 && sample(&r.body, "apache_up") == Some("1"))
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "the exporter never served apache_up 1 within 20 s:\n{}",
                e.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exporter's `/metrics` (it scrapes the admin listener for each).
    fn metrics(&self) -> String {
        let r = http_get(self.addr, "/metrics", &[])
            .unwrap_or_else(|e| panic!("GET the exporter's /metrics: {e}\n{}", self.log()));
        assert_eq!(r.status, 200, "exporter /metrics: {}", r.body);
        r.body
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- apache exporter log ----\n{}", self.log());
        }
    }
}

/// What one exporter scrape said of the cluster's counters.
#[derive(Debug, Clone, Copy)]
struct CounterSample {
    phase: &'static str,
    accesses: f64,
    kbytes: f64,
}

#[test]
fn apache_exporter_counters_never_go_down_when_a_node_stops_and_starts() {
    let a = ApacheNode::start(ApacheOpts::event("a", 8));
    let mut b = ApacheNode::start(ApacheOpts::prefork("b", 4));
    let c = ApacheNode::start(ApacheOpts::event("c", 8));
    let wc = Webcluster::start(|l, ad| {
        base_config(l, ad, "")
            + &group(
                "web",
                "balance = \"round_robin\"",
                &[
                    ("a", a.addr(), ""),
                    ("b", b.addr(), ""),
                    ("c", c.addr(), ""),
                ],
            )
    });
    wc.wait_all_up();
    let exporter = Exporter::start(wc.admin);

    // Traffic through the proxy all along (bounded: at most LOOP requests,
    // ended early by `stop`). Requests in flight when b stops may fail:
    // only the answered ones are counted.
    const LOOP: usize = 20_000;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let listen = wc.listen;
        std::thread::spawn(move || {
            let mut ok = 0usize;
            for _ in 0..LOOP {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if http_get(listen, "/node", &[]).is_ok_and(|r| r.status == 200) {
                    ok += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            ok
        })
    };

    let mut samples: Vec<CounterSample> = Vec::new();
    let mut take = |phase: &'static str| {
        let body = exporter.metrics();
        assert_eq!(sample(&body, "apache_up"), Some("1"), "{body}");
        let value = |name: &str| -> f64 {
            sample(&body, name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} from the exporter:\n{body}"))
        };
        let s = CounterSample {
            phase,
            accesses: value("apache_accesses_total"),
            kbytes: value("apache_sent_kilobytes_total"),
        };
        if let Some(prev) = samples.last() {
            assert!(
                s.accesses >= prev.accesses && s.kbytes >= prev.kbytes,
                "an exporter counter went down: {prev:?} then {s:?}\nall samples: {samples:#?}\n{body}"
            );
        }
        samples.push(s);
        std::thread::sleep(Duration::from_millis(100));
    };

    // Before: b answers and has counted requests of its own (its share of
    // the traffic and the proxy's scrapes), which a plain sum would lose.
    for _ in 0..15 {
        take("before");
    }
    let s = wc.status();
    assert!(
        node(&s, "b")["node_accesses_total"].as_u64() > Some(10),
        "{s:#}"
    );

    // During: b stopped, until the proxy sees it down and a while after.
    b.stop();
    let mut seen_down = false;
    for _ in 0..200 {
        take("stopping");
        if node(&wc.status(), "b")["state"] == "down" {
            seen_down = true;
            break;
        }
    }
    assert!(seen_down, "b never shown down:\n{}", wc.log());
    for _ in 0..15 {
        take("down");
    }

    // After: b started again (its own counters from 0), until up, and on.
    b.restart();
    let mut seen_up = false;
    for _ in 0..200 {
        take("restarting");
        if node(&wc.status(), "b")["state"] == "up" {
            seen_up = true;
            break;
        }
    }
    assert!(seen_up, "b never back up:\n{}", wc.log());
    for _ in 0..15 {
        take("after");
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = traffic.join().expect("the traffic thread");
    assert!(answered > 0, "no request answered through the proxy");

    let first = samples.first().copied().expect("samples");
    let last = samples.last().copied().expect("samples");
    assert!(
        last.accesses > first.accesses,
        "the traffic never showed: {first:?} .. {last:?}"
    );
    let lines: Vec<String> = samples
        .iter()
        .map(|s| format!("{} {} {}", s.phase, s.accesses, s.kbytes))
        .collect();
    fs::write(
        support::test_output_dir().join("apache-exporter-samples.txt"),
        lines.join("\n") + "\n",
    )
    .expect("save the samples");
}

// ---------------------------------------------------------------- 3. allow list

const ADMIN_PATHS: &[&str] = &[
    "/",
    "/status.json",
    "/?format=json",
    "/metrics",
    "/server-status?auto",
    "/server-status",
    "/healthz",
    "/no-such-page",
];

/// A 403 that tells nothing: no node name, address, version or path.
fn assert_refused(r: &Response, what: &str, secrets: &[&str]) {
    assert_eq!(r.status, 403, "{what}: {}", r.body);
    assert_eq!(r.body, "403 Forbidden\n", "{what}");
    for (name, value) in &r.headers {
        for secret in secrets {
            assert!(
                !value.contains(secret),
                "{what}: header {name}: {value} leaks {secret}"
            );
        }
    }
}

#[test]
fn admin_allow_list_refuses_other_sources() {
    let a = ApacheNode::start(ApacheOpts::event("secret-node", 4));
    let node_addr = a.addr();
    let make = move |allow: &str, l: SocketAddr, ad: SocketAddr| {
        base_config(l, ad, "").replace("[admin]\n", &format!("[admin]\nallow = [{allow}]\n"))
            + &group("web", "", &[("secret-node", node_addr, "")])
    };
    let wc = Webcluster::start(|l, ad| make("\"127.0.0.1/32\"", l, ad));
    wc.wait_all_up();
    let version = env!("CARGO_PKG_VERSION");
    let node_addr = a.addr().to_string();
    let secrets = ["secret-node", node_addr.as_str(), version, "webcluster"];
    let other = support::loopback(2);
    for path in ADMIN_PATHS {
        let r = http_get_from(other, wc.admin, path, &[])
            .unwrap_or_else(|e| panic!("GET {path} from {other}: {e}"));
        assert_refused(&r, &format!("GET {path} from {other}"), &secrets);
        // ... and allowed from 127.0.0.1 (the listed address)
        let r = get(wc.admin, path);
        assert_ne!(r.status, 403, "GET {path} from 127.0.0.1: {}", r.body);
    }
    for method in ["HEAD", "POST", "DELETE"] {
        let stream = support::connect_from(other, wc.admin).expect("connect from 127.0.0.2");
        let mut w = stream.try_clone().expect("clone");
        write!(
            w,
            "{method} /status.json HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let r = read_response(&mut BufReader::new(stream), method).expect("response");
        assert_eq!(r.status, 403, "{method} from {other}");
        if method != "HEAD" {
            assert_refused(&r, &format!("{method} from {other}"), &secrets);
        }
    }

    // Reload with only 127.0.0.2 allowed: now it is the other way round.
    fs::write(
        &wc.config_path,
        make("\"127.0.0.2/32\"", wc.listen, wc.admin),
    )
    .expect("rewrite config");
    wc.signal(nix::sys::signal::Signal::SIGHUP);
    support::wait_until(
        "127.0.0.2 allowed after reload",
        Duration::from_secs(20),
        || http_get_from(other, wc.admin, "/healthz", &[]).is_ok_and(|r| r.status == 200),
    );
    for path in ADMIN_PATHS {
        let r = get(wc.admin, path);
        assert_refused(&r, &format!("GET {path} from 127.0.0.1"), &secrets);
        let r = http_get_from(other, wc.admin, path, &[]).expect("GET from 127.0.0.2");
        assert_ne!(r.status, 403, "GET {path} from {other}: {}", r.body);
    }
    let r = http_get_from(other, wc.admin, "/metrics", &[]).expect("metrics");
    assert_eq!(
        sample(
            &r.body,
            r#"webcluster_config_reloads_total{result="success"}"#
        ),
        Some("1"),
        "{}",
        r.body
    );
    // The proxy listener is not affected by the admin allow list.
    let r = get(wc.listen, "/node");
    assert_eq!((r.status, r.body.trim()), (200, "secret-node"));
}

// ---------------------------------------------------------------- 4. guard

/// Request targets that a node could map to one of its status pages.
const STATUS_TARGETS: &[&str] = &[
    "/server-status",
    "/server-status?auto",
    "/server-status?auto&refresh=1",
    "/SERVER-STATUS",
    "/Server-Status?auto",
    "/server-status/",
    "/server-status/?auto",
    "//server-status",
    "///server-status?auto",
    "/./server-status",
    "/foo/../server-status",
    "/foo/bar/../../server-status?auto",
    "/%73erver-status",
    "/%73%65%72%76%65%72%2d%73%74%61%74%75%73",
    "/server%2Dstatus",
    "/server%2dstatus?auto",
    "/server-status%3Fauto",
    "/server-status;x",
    "/server-status;x?auto",
    "/server-status.html",
    "/server-status/foo",
    "/server-info",
    "/server-info?config",
    "/SERVER-INFO",
    "/nginx_status",
    "/stub_status",
    "/%2e%2e/server-status",
    "/%2E/server-status",
    "/..%2fserver-status",
    "/%2fserver-status",
    "/server-status%2f",
    "/server-status%2F?auto",
    "/%252e%252e/server-status",
    "/%2573erver-status",
    "/foo/..;/server-status",
    "/a%2fb/../server-status",
    "/server-status/%2e%2e",
    "/server-status#frag",
    "/server-status%23x",
    "/server-status%00",
    "/server-status%20",
    "/server-status.",
    "/%5cserver-status",
    "/.%2e/server-status",
    "/%2E%2E/%2E%2E/server-status",
    "/index.html/../server-status",
    "/server-status?",
    "/server-status?format=json",
    "/server-status/..%2f..%2fnode",
    "http://example.com/server-status",
    "http://example.com/server-status?auto",
    "HTTP://EXAMPLE.COM/SERVER-STATUS",
    "http://example.com//server-status",
];

/// `example.com` for `http://example.com/...`.
fn absolute_authority(target: &str) -> Option<&str> {
    let rest = target
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..])?;
    rest.split('/').next()
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE", "PATCH"];

#[test]
fn status_pages_are_never_reachable_through_the_proxy() {
    let apache = ApacheNode::start(ApacheOpts {
        allow_status_from: vec!["127.0.0.1".to_string()],
        ..ApacheOpts::prefork("guarded", 4)
    });
    // Directly, from 127.0.0.1 (the proxy's source address), the node answers:
    // so a request that got through would leak the page.
    let direct = get_ok(apache.addr(), "/server-status?auto");
    assert!(direct.body.contains("Scoreboard"), "{}", direct.body);
    let direct = get_ok(apache.addr(), "/server-status");
    assert!(
        direct.body.contains("Apache Server Status"),
        "{}",
        direct.body
    );

    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "") + &group("web", "", &[("guarded", apache.addr(), "")])
    });
    wc.wait_all_up();
    let leaks = [
        "Scoreboard",
        "Apache Server Status",
        "BusyWorkers",
        "Server Version",
    ];
    let mut failures = Vec::new();
    let mut count = 0;
    for target in STATUS_TARGETS {
        for method in METHODS {
            let body = if *method == "GET" || *method == "HEAD" {
                ""
            } else {
                "Content-Length: 0\r\n"
            };
            // In absolute form the Host header must name the same authority
            // (pingora answers 400 to a mismatch, checked below).
            let host = absolute_authority(target).unwrap_or("www.example.com");
            let raw = format!(
                "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{body}Connection: close\r\n\r\n"
            );
            count += 1;
            match raw_request(wc.listen, raw.as_bytes(), method) {
                Ok(r) => {
                    let leaked = leaks.iter().any(|l| r.body.contains(l))
                        || r.header("x-webcluster-node").is_some();
                    if r.status != 403 || leaked {
                        failures.push(format!(
                            "{method} {target} -> {} {:?}",
                            r.status,
                            r.body.chars().take(120).collect::<String>()
                        ));
                    }
                }
                Err(e) => failures.push(format!("{method} {target} -> error {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} status-page requests were not refused with 403:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // HTTP/1.0, with and without Host; odd method spellings.
    for raw in [
        "GET /server-status?auto HTTP/1.0\r\n\r\n",
        "GET /server-status?auto HTTP/1.0\r\nHost: www.example.com\r\n\r\n",
        "get /server-status?auto HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
        "PROPFIND /server-status HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
        "GET /server-status?auto HTTP/1.1\r\nHost: www.example.com\r\nX-Original-URL: /node\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_request(wc.listen, raw.as_bytes(), "GET")
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(r.status, 403, "{raw:?}: {}", r.body);
        assert!(!leaks.iter().any(|l| r.body.contains(l)), "{raw:?}: {}", r.body);
    }

    // Absolute form with a Host header naming another authority: refused
    // before any routing (by pingora, 400), nothing from the node.
    let r = raw_request(
        wc.listen,
        b"GET http://example.com/server-status?auto HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        "GET",
    )
    .expect("absolute form with another Host");
    assert!(matches!(r.status, 400 | 403), "{} {}", r.status, r.body);
    assert!(!r.body.contains("Scoreboard"), "{}", r.body);
    assert_eq!(r.header("x-webcluster-node"), None);

    // The same on a keep-alive connection after an ordinary request.
    let mut c = support::KeepAliveClient::connect(wc.listen).expect("connect");
    let r = c.get("/node", &[]).expect("GET /node");
    assert_eq!((r.status, r.body.trim()), (200, "guarded"));
    let r = c
        .get("/server-status?auto", &[])
        .expect("GET /server-status?auto");
    assert_eq!(r.status, 403, "{}", r.body);

    // Ordinary paths, including look-alikes outside the protected prefix,
    // still reach the node.
    for (path, code) in [
        ("/node", 200),
        ("/index.html", 200),
        ("/", 200),
        ("/sleep?ms=1", 200),
        ("/images/server-status.png", 404),
        ("/server", 404),
    ] {
        let r = get(wc.listen, path);
        assert_eq!(r.status, code, "GET {path}: {}", r.body);
        assert_eq!(r.header("x-webcluster-node"), Some("guarded"), "GET {path}");
    }
    let r = http_request(wc.listen, "POST", "/node", &[], b"x").expect("POST /node");
    assert_eq!(r.status, 200);
    // Every refusal was counted, none reached the node.
    let metrics = get_ok(wc.admin, "/metrics").body;
    let denied: usize = sample(&metrics, "webcluster_denied_status_path_requests_total")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(denied > count, "{denied} <= {count}");
    // And the node's own log: nothing but the direct requests above and the
    // proxy's scrapes ever asked it for a status page.
    let log = apache.access_log();
    let reached: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("status") || l.contains("info")) && !l.contains("/images/server-status.png")
        })
        .filter(|l| {
            !l.contains("\"GET /server-status?auto HTTP/1.1\" 200")
                && !l.contains("\"GET /server-status HTTP/1.1\" 200")
        })
        .collect();
    assert!(
        reached.is_empty(),
        "status page requests that reached the node:\n{}",
        reached.join("\n")
    );
}

// ---------------------------------------------------------------- 5. Chromium

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs Chromium headless with `args` + `url`, stdout to `stdout_path`;
/// panics if it does not finish within a minute or fails.
fn chromium(profile: &Path, args: &[String], url: &str, stdout_path: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} not found: the Debian package `chromium` is not installed. \
         Run `bash scripts/test.sh` (it installs it), or `apt-get install chromium`."
    );
    let stdout = fs::File::create(stdout_path).expect("create chromium stdout file");
    let stderr_path = stdout_path.with_extension("stderr.txt");
    let stderr = fs::File::create(&stderr_path).expect("create chromium stderr file");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {args:?} {url} did not finish within 90 s\n{}",
                fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "chromium {args:?} {url} failed: {status}\n{}",
        fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    fs::read_to_string(stdout_path).unwrap_or_default()
}

#[test]
fn status_page_in_headless_chromium() {
    let web1 = ApacheNode::start(ApacheOpts::event("web-1", 16));
    let web2 = ApacheNode::start(ApacheOpts::prefork("web-2", 8));
    let mut web3 = ApacheNode::start(ApacheOpts::event("web-3", 8));
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group(
                "web",
                "",
                &[
                    ("web-1", web1.addr(), ""),
                    ("web-2", web2.addr(), "weight = 2"),
                    ("web-3", web3.addr(), ""),
                ],
            )
    });
    wc.wait_all_up();
    // Some traffic and some load, so the page has numbers to show.
    for _ in 0..20 {
        assert_eq!(get(wc.listen, "/node").status, 200);
    }
    let _held: Vec<TcpStream> = (0..3).map(|_| hold_worker(web1.addr(), 60_000)).collect();
    web3.stop();
    wc.wait_status("web-3 down, the others up, web-1 busy", |s| {
        node(s, "web-3")["state"] == "down"
            && node(s, "web-1")["state"] == "up"
            && node(s, "web-2")["state"] == "up"
            && node(s, "web-1")["busy_workers"].as_u64() >= Some(3)
    });

    let dom = screenshot_and_dom(wc.admin, "admin-page", 900);
    assert!(dom.contains("webcluster status"), "{dom}");
    for name in ["web-1", "web-2", "web-3"] {
        assert!(
            dom.contains(&format!(">{name}<")),
            "node {name} missing from the DOM:\n{dom}"
        );
    }
    assert!(
        dom.contains("<span class=\"dot\"></span>down</span>"),
        "no down state in the DOM:\n{dom}"
    );
    assert!(
        dom.contains("<span class=\"dot\"></span>up</span>"),
        "no up state in the DOM:\n{dom}"
    );
    // Why web-3 is down, in words.
    assert!(dom.contains("connection refused"), "{dom}");
    let lower = dom.to_ascii_lowercase();
    for bad in [
        "internal server error",
        "panic",
        "502 bad gateway",
        "404 not found",
        "this site can",
    ] {
        assert!(!lower.contains(bad), "{bad:?} in the DOM:\n{dom}");
    }
}

/// The `<tr>` of `node` in a page or DOM (from its `data-node` attribute to
/// the row's end).
fn node_row<'a>(html: &'a str, node: &str) -> &'a str {
    let start = html
        .find(&format!("data-node=\"{node}\""))
        .unwrap_or_else(|| panic!("no row of {node}:\n{html}"));
    let end = html[start..]
        .find("</tr>")
        .map_or(html.len(), |e| start + e);
    &html[start..end]
}

#[test]
fn status_page_in_headless_chromium_down_full_draining() {
    const FULL_WORKERS: u32 = 3;
    let ok = ApacheNode::start(ApacheOpts::event("ok-1", 8));
    let mut down = ApacheNode::start(ApacheOpts::event("down-1", 8));
    let full = ApacheNode::start(ApacheOpts::prefork("full-1", FULL_WORKERS));
    let drained = ApacheNode::start(ApacheOpts::event("drain-1", 8));
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group(
                "web",
                "",
                &[
                    ("ok-1", ok.addr(), ""),
                    ("down-1", down.addr(), ""),
                    ("full-1", full.addr(), ""),
                    ("drain-1", drained.addr(), "drain = true"),
                ],
            )
    });
    wc.wait_status("every node up but the drained one", |s| {
        ["ok-1", "down-1", "full-1"]
            .iter()
            .all(|n| node(s, n)["state"] == "up")
            && node(s, "drain-1")["state"] == "draining"
    });
    for _ in 0..10 {
        assert_eq!(get(wc.listen, "/node").status, 200);
    }
    down.stop();
    // Every worker of full-1 but one held by slow requests sent straight to
    // it; the last one answers the proxy's scrape (prefork: the scrape
    // holds a worker), so its status shows no idle worker.
    let _held: Vec<TcpStream> = (0..FULL_WORKERS - 1)
        .map(|_| hold_worker(full.addr(), 120_000))
        .collect();
    wc.wait_status("down-1 down, full-1 full, drain-1 draining", |s| {
        node(s, "down-1")["state"] == "down"
            && node(s, "full-1")["state"] == "full"
            && node(s, "drain-1")["state"] == "draining"
            && node(s, "ok-1")["state"] == "up"
    });

    let dom = screenshot_and_dom(wc.admin, "admin-page-down-full-draining", 1000);
    assert!(dom.contains("webcluster status"), "{dom}");
    for (name, state) in [
        ("ok-1", "up"),
        ("down-1", "down"),
        ("full-1", "full"),
        ("drain-1", "draining"),
    ] {
        let row = node_row(&dom, name);
        assert!(
            row.contains(&format!("data-state=\"{state}\"")),
            "{name} is not {state} in the DOM:\n{row}"
        );
        assert!(
            row.contains(&format!("<span class=\"dot\"></span>{state}</span>")),
            "{name}: no {state} pill in the DOM:\n{row}"
        );
        assert!(row.contains(&format!(">{name}<")), "{row}");
    }
    // Why down-1 is down, in words.
    assert!(
        node_row(&dom, "down-1").contains("connection refused"),
        "{dom}"
    );
    let lower = dom.to_ascii_lowercase();
    for bad in [
        "internal server error",
        "panic",
        "502 bad gateway",
        "404 not found",
        "this site can",
    ] {
        assert!(!lower.contains(bad), "{bad:?} in the DOM:\n{dom}");
    }
}

/// The shipped alert rules are valid and pass their unit tests
/// (`conf/alerts.test.yml`).
#[test]
fn shipped_alert_rules_pass_promtool() {
    support::require_installed("/usr/bin/promtool", "prometheus");
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new("/usr/bin/promtool")
            .args(args)
            .current_dir(&conf)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A screenshot of the status page at `admin` (1280 x `height`) saved as
/// `target/test-output/NAME.png`, checked to be a PNG, and the page's DOM
/// as Chromium built it (also saved, as `NAME.dom.html`).
fn screenshot_and_dom(admin: std::net::SocketAddr, name: &str, height: u32) -> String {
    let out = support::test_output_dir();
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let url = format!("http://{admin}/");
    let png = out.join(format!("{name}.png"));
    let _ = fs::remove_file(&png);
    chromium(
        profile.path(),
        &[
            format!("--window-size=1280,{height}"),
            format!("--screenshot={}", png.display()),
        ],
        &url,
        &out.join(format!("{name}.screenshot.stdout.txt")),
    );
    let size = fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1000,
        "screenshot {} missing or empty ({size} bytes)",
        png.display()
    );
    let png_bytes = fs::read(&png).expect("read screenshot");
    assert!(png_bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    chromium(
        profile.path(),
        &["--dump-dom".to_string()],
        &url,
        &out.join(format!("{name}.dom.html")),
    )
}
