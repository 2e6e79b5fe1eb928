//! Nodes from DNS, end to end: a real DNS server (dnsmasq) answers the SRV
//! name of a group and the host name of a node for real Apache nodes. A
//! target added to the SRV answer comes into use without a reload; one
//! removed is drained with no failed request under a bounded load loop; a
//! DNS outage (the server stopped) keeps the last nodes and is shown in the
//! status JSON and the metrics.
//!
//! dnsmasq re-reads `--addn-hosts` files on SIGHUP but not `--srv-host`
//! options: SRV changes restart it on the same port (lookups meanwhile fail
//! and keep the last answer, which is part of what is tested).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::webcluster::{base_config, node, nodes, Webcluster};
use support::{free_port, http_get, require_installed, wait_until, ApacheNode, ApacheOpts};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const SRV: &str = "_http._tcp.web.test";

/// A dnsmasq on 127.0.0.1:`port` answering the names of `hosts` (an
/// addn-hosts file) and the SRV targets given. Killed when dropped.
struct Dns {
    child: Option<Child>,
    port: u16,
    hosts: PathBuf,
    log: PathBuf,
}

impl Dns {
    fn start(dir: &Path, hosts: &str, targets: &[(&str, u16)]) -> Dns {
        require_installed(DNSMASQ, "dnsmasq-base");
        let hosts_path = dir.join("hosts");
        std::fs::write(&hosts_path, hosts).expect("write hosts");
        let mut dns = Dns {
            child: None,
            port: free_port(),
            hosts: hosts_path,
            log: dir.join("dnsmasq.log"),
        };
        dns.spawn(targets);
        dns
    }

    /// (Re)start with these SRV targets (name, port), priority 10, weight 1.
    fn spawn(&mut self, targets: &[(&str, u16)]) {
        self.stop();
        let mut cmd = Command::new(DNSMASQ);
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local-ttl=1",
            "--log-queries",
        ])
        .arg(format!("--port={}", self.port))
        .arg(format!("--addn-hosts={}", self.hosts.display()));
        for (target, port) in targets {
            cmd.arg(format!("--srv-host={SRV},{target},{port},10,1"));
        }
        let log = std::fs::File::create(&self.log).expect("dnsmasq log");
        let err = log.try_clone().expect("dnsmasq log");
        self.child = Some(
            cmd.stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .expect("start dnsmasq"),
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

fn group_nodes(status: &serde_json::Value, group: &str) -> Vec<String> {
    status["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["name"] == group)
        .flat_map(|g| g["nodes"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect()
}

fn is_up(status: &serde_json::Value, name: &str) -> bool {
    nodes(status)
        .iter()
        .any(|n| n["name"] == name && n["state"] == "up")
}

/// GET /node through the proxy: the node that answered, or why not.
fn served_by(listen: SocketAddr) -> Result<String, String> {
    match http_get(listen, "/node", &[]) {
        Ok(r) if r.status == 200 => Ok(r.body.trim().to_owned()),
        Ok(r) => Err(format!("status {}: {}", r.status, r.body)),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn nodes_follow_dns_without_a_reload_and_outages_keep_the_last_answer() {
    let a = ApacheNode::start(ApacheOpts::prefork("a", 8));
    let b = ApacheNode::start(ApacheOpts::prefork("b", 8));
    let c = ApacheNode::start(ApacheOpts::prefork("c", 8));
    let h = ApacheNode::start(ApacheOpts::prefork("h", 4));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut dns = Dns::start(
        dir.path(),
        "127.0.0.1 a.web.test b.web.test c.web.test h.web.test\n",
        &[
            ("a.web.test", a.addr().port()),
            ("b.web.test", b.addr().port()),
        ],
    );
    let port = dns.port;
    let h_port = h.addr().port();
    let wc = Webcluster::start(|l, adm| {
        base_config(l, adm, "")
            + &format!(
                "[discovery]\nnameservers = [\"127.0.0.1:{port}\"]\nmin_ttl = \"1s\"\nmax_ttl = \"2s\"\n\n\
                 [[group]]\nname = \"web\"\nbalance = \"round_robin\"\nsrv = \"{SRV}\"\n\
                 scrape_interval = \"200ms\"\nscrape_timeout = \"200ms\"\nslow_start = \"1s\"\n\n\
                 [[group]]\nname = \"named\"\nscrape_interval = \"200ms\"\nscrape_timeout = \"200ms\"\n\
                 [[group.node]]\nname = \"h\"\naddress = \"h.web.test:{h_port}\"\n"
            )
    });

    // The SRV targets and the host name resolve: every node up.
    let status = wc.wait_status("the DNS nodes to be up", |s| {
        ["a.web.test", "b.web.test", "h"]
            .iter()
            .all(|n| is_up(s, n))
    });
    assert_eq!(node(&status, "h")["address"], format!("127.0.0.1:{h_port}"));
    for path in ["/ready", "/ready?all"] {
        let r = http_get(wc.admin, path, &[]).expect("GET /ready");
        assert_eq!((r.status, r.body.as_str()), (200, "ready\n"), "{path}");
    }
    assert_eq!(
        group_nodes(&status, "web"),
        ["a.web.test", "b.web.test"],
        "{status:#}"
    );

    // A target added to the SRV answer comes into use, with no reload.
    dns.spawn(&[
        ("a.web.test", a.addr().port()),
        ("b.web.test", b.addr().port()),
        ("c.web.test", c.addr().port()),
    ]);
    wc.wait_status("c to be discovered and up", |s| is_up(s, "c.web.test"));
    let mut seen_c = false;
    for _ in 0..200 {
        if served_by(wc.listen).expect("served") == "c" {
            seen_c = true;
            break;
        }
    }
    assert!(seen_c, "node c never served:\n{}", wc.log());
    assert_eq!(wc.status()["config"]["reloads_ok"], 0);

    // b removed from the answer under a bounded load loop: drained, no
    // request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failed, served) = (stop.clone(), failed.clone(), served.clone());
            let listen = wc.listen;
            thread::spawn(move || {
                let mut errors = Vec::new();
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match served_by(listen) {
                        Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.push(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                errors
            })
        })
        .collect();
    dns.spawn(&[
        ("a.web.test", a.addr().port()),
        ("c.web.test", c.addr().port()),
    ]);
    wc.wait_status("b to leave the group", |s| {
        group_nodes(s, "web") == ["a.web.test", "c.web.test"]
    });
    let after = served.load(Ordering::Relaxed) + 50;
    wait_until("50 more requests", Duration::from_secs(20), || {
        served.load(Ordering::Relaxed) >= after
    });
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = loaders
        .into_iter()
        .flat_map(|l| l.join().expect("load thread"))
        .collect();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{errors:?}\n{}",
        wc.log()
    );
    assert!(wc.log().contains("DNS: nodes changed"), "{}", wc.log());

    // DNS outage: the last nodes stay, the error is shown and counted.
    dns.stop();
    let status = wc.wait_status("the DNS error to show", |s| {
        s["dns"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["name"] == SRV && !d["last_error"].is_null())
    });
    assert_eq!(group_nodes(&status, "web"), ["a.web.test", "c.web.test"]);
    for _ in 0..20 {
        served_by(wc.listen).expect("served during the DNS outage");
    }
    let metrics = http_get(wc.admin, "/metrics", &[]).expect("metrics").body;
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with("webcluster_dns_resolutions_total{")
                && l.contains("group=\"web\"")
                && l.contains("result=\"failure\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "{metrics}");
    assert!(
        std::fs::read_to_string(&dns.log).is_ok(),
        "dnsmasq log kept for failures"
    );
    drop((a, b, c, h));
}
