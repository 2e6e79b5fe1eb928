//! The proxy end to end: the real binary in front of demo nodes (and one
//! real Apache node), on ephemeral loopback ports.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::demo::DemoNodes;
use support::webcluster::{
    base_config, binary, group_config, lost_port_race, node, wait_ready, Webcluster, PORT_TRIES,
};
use support::{http_get, http_get_from, http_request, ApacheNode, ApacheOpts};

fn group(name: &str, extra: &str, nodes: &[(&str, SocketAddr, &str)]) -> String {
    group_config(name, extra, nodes)
}

/// Demo nodes with 16 workers and no delay.
fn start_nodes(names: &[&str]) -> DemoNodes {
    DemoNodes::start(names, 16, Duration::ZERO)
}

fn get_node_name(wc: &Webcluster, headers: &[(&str, &str)]) -> String {
    let r = http_get(wc.listen, "/node", headers).expect("GET /node through the proxy");
    assert_eq!(r.status, 200, "body: {}", r.body);
    r.body
}

fn tally(wc: &Webcluster, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(get_node_name(wc, &[])).or_insert(0) += 1;
    }
    counts
}

/// `Ok` when every run of `period` consecutive picks (period = the sum of
/// the weights) holds each node exactly its weight's number of times. Any
/// weighted round robin (smooth or not, from any starting point) passes;
/// a random picker fails: with weights 1:2:3 a weighted random choice
/// fills one given run of 6 exactly 1/2/3 with probability
/// 60 x (1/6) x (1/3)^2 x (1/2)^3 = 0.139, so over 60 picks (10 disjoint
/// runs) it passes with probability below 0.139^10 = 3e-9 (a uniform one:
/// 0.082^10 = 1e-11). `weight_check_refuses_random_pickers` tries it.
fn check_weighted_runs(picks: &[String], weights: &[(&str, usize)]) -> Result<(), String> {
    let period: usize = weights.iter().map(|(_, w)| w).sum();
    for (start, run) in picks.windows(period).enumerate() {
        for (name, weight) in weights {
            let got = run.iter().filter(|p| p == name).count();
            if got != *weight {
                return Err(format!(
                    "picks {start}..{}: {name} {got} times, not {weight}: {run:?}",
                    start + period
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn round_robin_spreads_by_weight() {
    let nodes = start_nodes(&["a", "b", "c"]);
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group(
                "web",
                "balance = \"round_robin\"",
                &[
                    ("a", nodes.addr(0), "weight = 1"),
                    ("b", nodes.addr(1), "weight = 2"),
                    ("c", nodes.addr(2), "weight = 3"),
                ],
            )
    });
    wc.wait_all_up();
    let picks: Vec<String> = (0..60).map(|_| get_node_name(&wc, &[])).collect();
    if let Err(e) = check_weighted_runs(&picks, &[("a", 1), ("b", 2), ("c", 3)]) {
        panic!("not a weighted round robin: {e}\nall picks: {picks:?}");
    }
    // Smooth (nginx's): the heaviest node is never picked three times in a
    // row, as a plain `a b b c c c` round robin would.
    assert!(
        picks.windows(3).all(|w| w.iter().any(|p| p != "c")),
        "not smooth: {picks:?}"
    );
}

/// The check above tells a weighted round robin from random picks: it
/// refuses every one of 1000 seeded random sequences (weighted and
/// uniform), and accepts the round robin sequences whatever their phase.
#[test]
fn weight_check_refuses_random_pickers() {
    let weights = [("a", 1), ("b", 2), ("c", 3)];
    let names =
        |idx: &[usize]| -> Vec<String> { idx.iter().map(|&i| weights[i].0.to_string()).collect() };
    // xorshift64*: deterministic, no dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..500 {
        let weighted: Vec<usize> = (0..60)
            .map(|_| match next() % 6 {
                0 => 0,
                1 | 2 => 1,
                _ => 2,
            })
            .collect();
        assert!(check_weighted_runs(&names(&weighted), &weights).is_err());
        let uniform: Vec<usize> = (0..60).map(|_| (next() % 3) as usize).collect();
        assert!(check_weighted_runs(&names(&uniform), &weights).is_err());
    }
    let smooth = [2, 1, 0, 2, 1, 2]; // nginx's smooth order for 1:2:3
    let plain = [0, 1, 1, 2, 2, 2];
    for cycle in [smooth, plain] {
        for phase in 0..6 {
            let seq: Vec<usize> = (0..60).map(|i| cycle[(i + phase) % 6]).collect();
            assert_eq!(check_weighted_runs(&names(&seq), &weights), Ok(()));
        }
    }
}

#[test]
fn busyness_and_least_inflight_use_every_idle_node() {
    for method in ["busyness", "least_inflight"] {
        let nodes = start_nodes(&["a", "b", "c"]);
        let wc = Webcluster::start(|l, a| {
            base_config(l, a, "")
                + &group(
                    "web",
                    &format!("balance = \"{method}\""),
                    &[
                        ("a", nodes.addr(0), ""),
                        ("b", nodes.addr(1), ""),
                        ("c", nodes.addr(2), ""),
                    ],
                )
        });
        wc.wait_all_up();
        let counts = tally(&wc, 60);
        for n in ["a", "b", "c"] {
            assert!(
                counts.get(n).copied().unwrap_or(0) >= 5,
                "{method}: node {n} got too few of 60 sequential requests: {counts:?}"
            );
        }
    }
}

#[test]
fn host_and_forwarded_headers() {
    let nodes = start_nodes(&["a"]);
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "") + &group("web", "", &[("a", nodes.addr(0), "")])
    });
    let r = http_get(
        wc.listen,
        "/headers",
        &[
            ("Host", "www.example.com"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ],
    )
    .expect("GET /headers");
    assert_eq!(r.status, 200);
    let h = |name: &str| r.echoed(name).map(str::to_string);
    assert_eq!(h("host").as_deref(), Some("www.example.com"), "{}", r.body);
    // spoofed values from an untrusted client are replaced
    assert_eq!(
        h("x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "{}",
        r.body
    );
    assert_eq!(h("x-real-ip").as_deref(), Some("127.0.0.1"), "{}", r.body);
    assert_eq!(
        h("x-forwarded-proto").as_deref(),
        Some("http"),
        "{}",
        r.body
    );
    // hop-by-hop headers are not forwarded
    let r = http_get(
        wc.listen,
        "/headers",
        &[
            ("Connection", "close, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
        ],
    )
    .expect("GET /headers");
    assert_eq!(r.echoed("x-secret"), None, "{}", r.body);
    assert_eq!(r.echoed("keep-alive"), None, "{}", r.body);
}

#[test]
fn trusted_proxy_keeps_and_appends_x_forwarded_for() {
    let nodes = start_nodes(&["a"]);
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "trusted_proxies = [\"127.0.0.2/32\"]")
            + &group("web", "", &[("a", nodes.addr(0), "")])
    });
    let from = support::loopback(2);
    let r = http_get_from(
        from,
        wc.listen,
        "/headers",
        &[
            ("X-Forwarded-For", "198.51.100.7"),
            ("X-Forwarded-Proto", "https"),
        ],
    )
    .expect("GET /headers from 127.0.0.2");
    assert_eq!(
        r.echoed("x-forwarded-for"),
        Some("198.51.100.7, 127.0.0.2"),
        "{}",
        r.body
    );
    assert_eq!(r.echoed("x-real-ip"), Some("198.51.100.7"), "{}", r.body);
    assert_eq!(r.echoed("x-forwarded-proto"), Some("https"), "{}", r.body);
    // the same headers from 127.0.0.1 (not trusted) are replaced
    let r = http_get(
        wc.listen,
        "/headers",
        &[("X-Forwarded-For", "198.51.100.7")],
    )
    .expect("GET /headers");
    assert_eq!(r.echoed("x-forwarded-for"), Some("127.0.0.1"), "{}", r.body);
}

#[test]
fn killed_node_is_skipped_and_gets_requests_retried() {
    let mut nodes = start_nodes(&["a", "b", "c"]);
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group(
                "web",
                "balance = \"round_robin\"\nscrape = false",
                &[
                    ("a", nodes.addr(0), ""),
                    ("b", nodes.addr(1), ""),
                    ("c", nodes.addr(2), ""),
                ],
            )
    });
    let before = tally(&wc, 9);
    assert_eq!(before.len(), 3, "{before:?}");
    nodes.stop(1);
    // every GET still succeeds: the failed connect is retried elsewhere
    let after = tally(&wc, 30);
    assert_eq!(after.get("b"), None, "{after:?}");
    assert_eq!(after.values().sum::<usize>(), 30);
    let s = wc.status();
    assert_eq!(node(&s, "b")["state"], "down", "{s:#}");
    assert!(node(&s, "b")["errors_total"].as_u64() >= Some(1));
}

#[test]
fn all_nodes_down_gives_502_with_a_plain_body() {
    let mut nodes = start_nodes(&["a", "b"]);
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group(
                "web",
                "",
                &[("a", nodes.addr(0), ""), ("b", nodes.addr(1), "")],
            )
    });
    nodes.stop(0);
    nodes.stop(1);
    for _ in 0..3 {
        let r = http_get(wc.listen, "/", &[]).expect("GET /");
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert!(r.body.starts_with("502 Bad Gateway"), "{}", r.body);
    }
    assert!(wc.log().contains("answered 502"), "{}", wc.log());
}

#[test]
fn node_that_never_answers_gives_504() {
    let nodes = start_nodes(&["slow"]);
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + "[timeouts]\nread = \"500ms\"\n\n"
            + &group("web", "", &[("slow", nodes.addr(0), "")])
    });
    wc.wait_all_up();
    nodes.node(0).set_stall(true);
    let r = http_get(wc.listen, "/", &[]).expect("GET /");
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(r.body.starts_with("504 Gateway Timeout"), "{}", r.body);
    nodes.node(0).set_stall(false);
}

#[test]
fn backup_serves_only_when_primaries_are_down() {
    let mut nodes = start_nodes(&["p1", "p2", "backup"]);
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &group(
                "web",
                "fall = 1",
                &[
                    ("p1", nodes.addr(0), ""),
                    ("p2", nodes.addr(1), ""),
                    ("backup", nodes.addr(2), "backup = true"),
                ],
            )
    });
    wc.wait_all_up();
    let counts = tally(&wc, 30);
    assert_eq!(counts.get("backup"), None, "{counts:?}");
    nodes.stop(0);
    nodes.stop(1);
    wc.wait_status("primaries down", |s| {
        node(s, "p1")["state"] == "down" && node(s, "p2")["state"] == "down"
    });
    let counts = tally(&wc, 10);
    assert_eq!(counts.get("backup"), Some(&10), "{counts:?}");
}

#[test]
fn routes_by_host_and_path() {
    let nodes = start_nodes(&["www", "static", "api"]);
    let wc = Webcluster::start(|l, a| {
        "default_group = \"www\"\n".to_string()
            + &base_config(l, a, "")
            + &group("www", "", &[("www", nodes.addr(0), "")])
            + &group("static", "", &[("static", nodes.addr(1), "")])
            + &group("api", "", &[("api", nodes.addr(2), "")])
            + "[[route]]\nhost = \"static.example.com\"\ngroup = \"static\"\n\n"
            + "[[route]]\npath = \"/api/\"\ngroup = \"api\"\n"
    });
    let get = |host: &str, path: &str| {
        http_get(wc.listen, path, &[("Host", host)])
            .expect("GET")
            .header("x-demo-node")
            .map(str::to_string)
    };
    assert_eq!(get("static.example.com", "/x").as_deref(), Some("static"));
    assert_eq!(
        get("STATIC.example.com:80", "/api/v1").as_deref(),
        Some("static")
    );
    assert_eq!(get("www.example.com", "/api/v1").as_deref(), Some("api"));
    assert_eq!(get("www.example.com", "/apix").as_deref(), Some("www"));
    assert_eq!(get("other", "/").as_deref(), Some("www"));
}

#[test]
fn post_is_proxied_with_its_body() {
    let nodes = start_nodes(&["a"]);
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "") + &group("web", "", &[("a", nodes.addr(0), "")])
    });
    let r = http_request(wc.listen, "POST", "/node", &[], b"hello").expect("POST");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "a");
}

#[test]
fn real_apache_node_through_the_proxy() {
    let apache = ApacheNode::start(ApacheOpts::event("apache1", 8));
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "") + &group("web", "", &[("apache1", apache.addr(), "")])
    });
    let s = wc.wait_all_up();
    let n = node(&s, "apache1");
    assert_eq!(n["server_kind"], "apache", "{n:#}");
    assert_eq!(n["capacity"], 8, "{n:#}");
    let r = http_get(wc.listen, "/node", &[]).expect("GET /node");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.trim(), "apache1");
    let r =
        http_get(wc.listen, "/headers", &[("X-Forwarded-For", "1.2.3.4")]).expect("GET /headers");
    assert_eq!(r.echoed("x-forwarded-for"), Some("127.0.0.1"), "{}", r.body);
}

#[test]
fn check_command_validates_the_reference_config() {
    let out = std::process::Command::new(binary())
        .args(["check", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/webcluster.toml"))
        .output()
        .expect("run webcluster check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(stdout.contains("group"), "{stdout}");
}

#[test]
fn check_command_rejects_a_bad_config_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[group]]\nname = \"web\"\n  [[group.node]]\n  name = \"a\"\n  address = \"127.0.0.1:80\"\n  wieght = 2\n",
    )
    .expect("write");
    let out = std::process::Command::new(binary())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run webcluster check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:6:", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("wieght"), "{stderr}");
}

#[test]
fn demo_answers_through_the_proxy() {
    let (mut child, listen, https, admin) = start_demo();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        if let Ok(r) = http_get(listen, "/node", &[]) {
            if r.status == 200 {
                seen.insert(r.body);
            }
        }
        if seen.len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let page = http_get(admin, "/", &[]);
    // HTTPS too, with the certificate the demo made at start.
    let curl = std::process::Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{ssl_verify_result}",
        ])
        .arg(format!("https://{https}/node"))
        .output()
        .expect("run curl");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen.len(), 3, "demo nodes seen: {seen:?}");
    for n in ["node1", "node2", "node3"] {
        assert!(seen.contains(n), "{seen:?}");
    }
    let page = page.expect("admin page");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("node1"));
    let out = String::from_utf8_lossy(&curl.stdout);
    let (body, code) = out.rsplit_once('\n').expect("curl -w line");
    assert!(code.starts_with("200 "), "curl -k https: {out}");
    assert!(["node1", "node2", "node3"].contains(&body.trim()), "{out}");
    assert!(page.body.contains("TLS certificates"), "{}", page.body);
    assert!(page.body.contains("webcluster demo"), "{}", page.body);
}

/// `webcluster demo` on fresh loopback ports, answering on its admin port;
/// started again on other ports when another socket took one first (see
/// `support::webcluster::lost_port_race`).
fn start_demo() -> (std::process::Child, SocketAddr, SocketAddr, SocketAddr) {
    for attempt in 1..=PORT_TRIES {
        let listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let https = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("demo.log");
        let log = std::fs::File::create(&log_path).expect("demo log");
        let mut child = std::process::Command::new(binary())
            .args([
                "demo",
                "--listen",
                &listen.to_string(),
                "--https",
                &https.to_string(),
                "--admin",
                &admin.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start demo");
        match wait_ready(&mut child, admin, &log_path) {
            Ok(()) => return (child, listen, https, admin),
            Err(log) if attempt < PORT_TRIES && lost_port_race(&log) => {}
            Err(log) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("demo: {log}");
            }
        }
    }
    unreachable!("the last try returns or panics")
}

#[test]
fn access_log_names_the_node_and_upstream_time() {
    let nodes = start_nodes(&["a"]);
    let log_dir = tempfile::tempdir().expect("temp dir");
    let log_path = log_dir.path().join("access.log");
    let wc = Webcluster::start(|l, a| {
        base_config(l, a, "")
            + &format!("[access_log]\ntarget = \"{}\"\n\n", log_path.display())
            + &group("web", "", &[("a", nodes.addr(0), "")])
    });
    for _ in 0..3 {
        let r = http_get(
            wc.listen,
            "/node",
            &[
                ("User-Agent", "test-agent/1"),
                ("REFERER", "http://example.com/a"),
            ],
        )
        .expect("GET");
        assert_eq!(r.status, 200);
    }
    let r = http_get(wc.listen, "/server-status", &[]).expect("GET");
    assert_eq!(r.status, 403);
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.lines().count() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A line is written once its response went out, so the last /node line
    // may land after the status-page refusal, served on another connection.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let (refused, served): (Vec<&str>, Vec<&str>) = lines
        .iter()
        .partition(|line| line.contains("\"GET /server-status "));
    assert_eq!(served.len(), 3, "{text}");
    for line in &served {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(
            line.contains("\"GET /node HTTP/1.1\" 200 1 \"http://example.com/a\" \"test-agent/1\""),
            "{line}"
        );
        assert!(line.contains(" node=web/a upstream_time=0."), "{line}");
    }
    // a refused status-page request is logged too, with no node
    assert_eq!(refused.len(), 1, "{text}");
    assert!(
        refused[0].contains("\"GET /server-status HTTP/1.1\" 403"),
        "{}",
        refused[0]
    );
    assert!(
        refused[0].contains(" node=- upstream_time=- "),
        "{}",
        refused[0]
    );
}
