//! Process lifecycle end to end, on the real binary in front of demo nodes:
//! config reload (SIGHUP and `webcluster reload`), refused reloads, reloads
//! under load, graceful shutdown on SIGTERM and pingora's binary upgrade
//! (SIGQUIT to the old process, the new one started with `--upgrade`).
//!
//! Load tests count every response: a request that got a non-200 answer or
//! failed on a fresh connection is lost. A request on a REUSED keep-alive
//! connection that fails before any response arrives is resent once on a
//! fresh connection (what any HTTP client does, RFC 9112 section 9.3.1);
//! such retries are counted and printed apart.

mod support;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::demo::DemoNodes;
use support::webcluster::{
    binary, group_config, lost_port_race, node, nodes, reload_counts, Webcluster,
};
use support::{http_get, wait_until, KeepAliveClient};

// ---------------------------------------------------------------------------
// Set-up helpers

/// Demo nodes with 64 workers and `delay` on every page.
fn start_nodes(names: &[&str], delay: Duration) -> DemoNodes {
    DemoNodes::start(names, 64, delay)
}

/// `[server]` (with `extra` keys) and `[admin]`; grace period 30 s so that
/// "exits once drained" is told apart from "exits at the grace limit".
fn server_config(listen: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"{listen}\"]\nthreads = 2\ngrace_period = \"30s\"\n\
         log_level = \"info\"\n{extra}\n\n[admin]\nlisten = \"{admin}\"\n\n"
    )
}

/// A round-robin `[[group]]` named `web` with (name, address, extra keys) nodes.
fn web_group(nodes: &[(&str, SocketAddr, &str)]) -> String {
    group_config("web", "balance = \"round_robin\"", nodes)
}

fn node_names(s: &serde_json::Value) -> Vec<String> {
    nodes(s)
        .iter()
        .map(|n| n["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Which node answered each of `n` sequential `GET /node` (fresh connections).
fn tally(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = http_get(addr, "/node", &[]).expect("GET /node through the proxy");
        assert_eq!(r.status, 200, "body: {}", r.body);
        *counts.entry(r.body).or_insert(0) += 1;
    }
    counts
}

/// Wait until the log contains `needle` (log lines are written just after
/// the state they describe is visible).
fn wait_log(wc: &Webcluster, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !wc.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "the log never showed {needle:?}:\n{}",
            wc.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The running proxy raised its open-files limit to the hard limit and
/// grew its descriptor table up front (`webcluster::descriptors`): its
/// `/proc` entries show both, and its log says so.
fn descriptors_set_up_at_start(wc: &Webcluster) {
    let proc_file = |name: &str| {
        std::fs::read_to_string(format!("/proc/{}/{name}", wc.pid())).expect("/proc entry")
    };
    let limits = proc_file("limits");
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files")
        .split_whitespace()
        .collect();
    // "Max open files <soft> <hard> files"
    let (soft, hard) = (open_files[3], open_files[4]);
    if hard != "unlimited" {
        assert_eq!(soft, hard, "{limits}");
    }
    let soft: u64 = soft.parse().expect("soft limit");
    let table = webcluster::descriptors::table_size(&proc_file("status")).expect("FDSize");
    let reserved = webcluster::descriptors::reserve_for(soft);
    assert!(
        table >= reserved,
        "descriptor table of {table}, {reserved} wanted"
    );
    wait_log(wc, &format!("descriptor table sized for {reserved}"));
}

/// `webcluster ARGS CONFIG` (a `reload` command line), run to its end.
fn reload_cli(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .arg(config)
        .output()
        .expect("run webcluster reload")
}

/// The line number (1-based) of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
}

// ---------------------------------------------------------------------------
// Load: keep-alive clients that count every response

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Requests resent on a fresh connection after a reused one failed
    /// before any response (RFC 9112 9.3.1).
    retried: AtomicU64,
    /// Connections the server closed with `Connection: close`.
    closed_by_server: AtomicU64,
    lost: Mutex<Vec<String>>,
}

impl Tally {
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    fn lost(&self) -> Vec<String> {
        self.lost.lock().unwrap().clone()
    }

    fn summary(&self) -> String {
        format!(
            "{} ok, {} retried on a fresh connection after a reused one was closed, \
             {} connections closed by the server, {} lost",
            self.ok(),
            self.retried.load(Ordering::SeqCst),
            self.closed_by_server.load(Ordering::SeqCst),
            self.lost.lock().unwrap().len()
        )
    }
}

/// Errors a request on a reused connection may get when the server closed
/// it just before (no response byte read).
/// Print both clients' tallies and fail if either lost a request.
fn assert_nothing_lost(what: &str, counted: &Tally, fresh: &Tally) {
    eprintln!("{what}: keep-alive clients: {}", counted.summary());
    eprintln!("{what}: new connection each: {}", fresh.summary());
    for c in [counted, fresh] {
        assert!(
            c.lost().is_empty(),
            "lost requests: {:#?}\n{}",
            c.lost(),
            c.summary()
        );
    }
}

fn closed_before_response(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    /// `clients` threads, each sending at most `max_per_client` requests
    /// and for at most `limit`, until `finish`.
    fn start(addr: SocketAddr, clients: usize, max_per_client: usize, limit: Duration) -> Load {
        Load::start_closing(addr, clients, max_per_client, limit, 0)
    }

    /// Like `start`, but every `close_every`-th request of each client
    /// (0: none) asks the server to close the connection after it, so new
    /// connections keep arriving too.
    fn start_closing(
        addr: SocketAddr,
        clients: usize,
        max_per_client: usize,
        limit: Duration,
        close_every: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let deadline = Instant::now() + limit;
        let threads = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let tally = Arc::clone(&tally);
                thread::spawn(move || {
                    client(addr, &stop, &tally, max_per_client, deadline, close_every)
                })
            })
            .collect();
        Load {
            stop,
            tally,
            threads,
        }
    }

    /// Wait (bounded) until `n` more responses were counted.
    fn wait_more(&self, n: u64) {
        let target = self.tally.ok() + n;
        wait_until(
            &format!("{n} more responses under load"),
            Duration::from_secs(30),
            || self.tally.ok() >= target || !self.tally.lost().is_empty(),
        );
    }

    fn finish(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("client thread");
        }
        self.tally
    }
}

fn client(
    addr: SocketAddr,
    stop: &AtomicBool,
    tally: &Tally,
    max: usize,
    deadline: Instant,
    close_every: usize,
) {
    let mut conn: Option<KeepAliveClient> = None;
    for i in 0..max {
        let headers: &[(&str, &str)] = if close_every > 0 && i % close_every == close_every - 1 {
            &[("Connection", "close")]
        } else {
            &[]
        };
        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return;
        }
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => match KeepAliveClient::connect(addr) {
                Ok(c) => c,
                Err(e) => {
                    tally
                        .lost
                        .lock()
                        .unwrap()
                        .push(format!("#{i}: connect: {e}"));
                    continue;
                }
            },
        };
        let mut result = c.get("/node", headers);
        if let Err(e) = &result {
            if reused && closed_before_response(e) {
                tally.retried.fetch_add(1, Ordering::SeqCst);
                result = KeepAliveClient::connect(addr).and_then(|fresh| {
                    c = fresh;
                    c.get("/node", headers)
                });
            }
        }
        match result {
            Ok(r) if r.status == 200 => {
                tally.ok.fetch_add(1, Ordering::SeqCst);
                let close = r
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                if close {
                    tally.closed_by_server.fetch_add(1, Ordering::SeqCst);
                } else {
                    conn = Some(c);
                }
            }
            Ok(r) => tally.lost.lock().unwrap().push(format!(
                "#{i}: status {}: {}",
                r.status,
                r.body.trim()
            )),
            Err(e) => tally.lost.lock().unwrap().push(format!(
                "#{i}: {} connection: {e} ({:?})",
                if reused { "reused" } else { "fresh" },
                e.kind()
            )),
        }
    }
}

/// A child process killed (and reaped) when dropped, so that a failing test
/// leaves nothing running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait (bounded) for a child process to exit.
fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn reload_adds_removes_and_reweights_nodes() {
    let nodes = start_nodes(&["a", "b", "c"], Duration::ZERO);
    let (a, b, c) = (nodes.addr(0), nodes.addr(1), nodes.addr(2));
    let wc = Webcluster::start(|l, adm| {
        server_config(l, adm, "") + &web_group(&[("a", a, "weight = 1"), ("b", b, "weight = 1")])
    });
    let before = wc.wait_all_up();
    descriptors_set_up_at_start(&wc);
    let counts = tally(wc.listen, 20);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    let before_hash = before["config"]["hash"].as_str().unwrap().to_string();
    let a_before = node(&wc.status(), "a")["proxied_total"].as_u64().unwrap();
    assert!(a_before >= 10, "a proxied {a_before}");

    // b removed, c added, a's weight 1 -> 3
    let text = server_config(wc.listen, wc.admin, "")
        + &web_group(&[("a", a, "weight = 3"), ("c", c, "weight = 1")]);
    let s = wc.reload_with(&text);
    assert_eq!(reload_counts(&s), (1, 0), "{s:#}");
    assert_eq!(node_names(&s), ["a", "c"], "{s:#}");
    assert_eq!(node(&s, "a")["weight"], 3, "{s:#}");
    assert_eq!(node(&s, "c")["weight"], 1, "{s:#}");
    let hash = s["config"]["hash"].as_str().unwrap();
    assert_ne!(hash, before_hash, "the config hash must change");
    assert_eq!(s["config"]["last_reload_error"], serde_json::Value::Null);
    // the node that stays keeps its live state and counters
    assert!(
        node(&s, "a")["proxied_total"].as_u64().unwrap() >= a_before,
        "a's counter was reset: {s:#}"
    );
    assert_eq!(node(&s, "a")["state"], "up", "a keeps its state: {s:#}");
    assert_eq!(node(&s, "c")["proxied_total"], 0, "{s:#}");

    wait_log(&wc, "nodes added: web/c");
    let log = wc.log();
    let line = log
        .lines()
        .find(|l| l.contains("config reloaded"))
        .expect("a reload log line");
    assert!(line.contains("nodes removed: web/b"), "{line}");
    assert!(line.contains("web/a: weight 1 -> 3"), "{line}");
    assert!(
        line.contains(&hash[..12]),
        "the line names the new hash: {line}"
    );

    // the status page and the metrics name the new config and when it came
    assert!(
        s["config"]["loaded_unix"].as_f64() > before["config"]["loaded_unix"].as_f64(),
        "{s:#}"
    );
    let metrics = http_get(wc.admin, "/metrics", &[])
        .expect("GET /metrics")
        .body;
    let info = metrics
        .lines()
        .find(|l| l.starts_with("webcluster_config_info{"))
        .unwrap_or_default();
    assert!(
        info.contains(&format!("hash=\"{hash}\"")) && info.ends_with(" 1"),
        "{metrics}"
    );
    let reloaded_at: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("webcluster_config_last_reload_success_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("last reload timestamp");
    assert!(
        reloaded_at >= before["config"]["loaded_unix"].as_f64().unwrap().floor(),
        "{metrics}"
    );
    assert!(
        metrics.contains("webcluster_config_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );

    // through the proxy: b no longer answers, a gets 3 of every 4
    wc.wait_all_up();
    let counts = tally(wc.listen, 40);
    assert_eq!(counts.get("b"), None, "{counts:?}");
    assert_eq!(counts.get("a"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&10), "{counts:?}");
    let s = wc.status();
    assert_eq!(
        node(&s, "a")["proxied_total"].as_u64().unwrap(),
        a_before + 30,
        "{s:#}"
    );
    assert_eq!(node(&s, "c")["proxied_total"], 10, "{s:#}");
}

#[test]
fn broken_config_on_reload_keeps_the_old_one_serving() {
    let nodes = start_nodes(&["a", "b"], Duration::ZERO);
    let (a, b) = (nodes.addr(0), nodes.addr(1));
    let good = |l, adm| server_config(l, adm, "") + &web_group(&[("a", a, ""), ("b", b, "")]);
    let wc = Webcluster::start(good);
    let before = wc.wait_all_up();
    let hash = before["config"]["hash"].clone();
    assert_eq!(tally(wc.listen, 10).len(), 2);

    // 1. an unknown key in a node
    let broken = server_config(wc.listen, wc.admin, "")
        + &web_group(&[("a", a, "colour = \"red\""), ("b", b, "")]);
    let line = line_of(&broken, "colour");
    let s = wc.reload_with(&broken);
    assert_eq!(reload_counts(&s), (0, 1), "{s:#}");
    assert_eq!(s["config"]["hash"], hash, "the old config stays: {s:#}");
    assert_eq!(node_names(&s), ["a", "b"], "{s:#}");
    let error = s["config"]["last_reload_error"]
        .as_str()
        .unwrap_or_default();
    let place = format!("{}:{line}:", wc.config_path.display());
    assert!(
        error.contains(&place) && error.contains("`colour`"),
        "{error}"
    );
    wait_log(&wc, "reload refused");
    let log = wc.log();
    let logged = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .expect("the refusal is logged");
    assert!(
        logged.contains(&place) && logged.contains("key `colour`"),
        "{logged}"
    );
    let counts = tally(wc.listen, 10);
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&5), Some(&5)),
        "{counts:?}"
    );
    let metrics = http_get(wc.admin, "/metrics", &[])
        .expect("GET /metrics")
        .body;
    assert!(
        metrics
            .lines()
            .any(|l| l == "webcluster_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );

    // 2. a duplicate node name
    let dup = server_config(wc.listen, wc.admin, "")
        + &web_group(&[("a", a, ""), ("b", b, ""), ("a", b, "")]);
    let s = wc.reload_with(&dup);
    assert_eq!(reload_counts(&s), (0, 2), "{s:#}");
    assert_eq!(s["config"]["hash"], hash, "{s:#}");
    let error = s["config"]["last_reload_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains(&format!("{}:", wc.config_path.display())) && error.contains("\"a\""),
        "{error}"
    );
    assert_eq!(tally(wc.listen, 10).len(), 2);

    // 3. fixed again: the reload goes through and the error is cleared
    let fixed = server_config(wc.listen, wc.admin, "")
        + &web_group(&[("a", a, "weight = 2"), ("b", b, "")]);
    let s = wc.reload_with(&fixed);
    assert_eq!(reload_counts(&s), (1, 2), "{s:#}");
    assert_ne!(s["config"]["hash"], hash, "{s:#}");
    assert_eq!(s["config"]["last_reload_error"], serde_json::Value::Null);
    wait_log(&wc, "config reloaded");
    let metrics = http_get(wc.admin, "/metrics", &[])
        .expect("GET /metrics")
        .body;
    assert!(
        metrics.contains("webcluster_config_reloads_total{result=\"failure\"} 2")
            && metrics.contains("webcluster_config_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
}

#[test]
fn reload_command_signals_the_pid_in_pid_file() {
    let nodes = start_nodes(&["a", "b"], Duration::ZERO);
    let (a, b) = (nodes.addr(0), nodes.addr(1));
    let run_dir = tempfile::tempdir().expect("temp dir");
    let pid_file = run_dir.path().join("webcluster.pid");
    let extra = format!("pid_file = \"{}\"", pid_file.display());
    let wc =
        Webcluster::start(|l, adm| server_config(l, adm, &extra) + &web_group(&[("a", a, "")]));
    wait_until("the pid file", Duration::from_secs(10), || {
        read_pid(&pid_file) == Some(wc.pid())
    });

    let text =
        server_config(wc.listen, wc.admin, &extra) + &web_group(&[("a", a, ""), ("b", b, "")]);
    std::fs::write(&wc.config_path, &text).expect("write config");
    let out = reload_cli(&["reload", "-c"], &wc.config_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("sent SIGHUP to webcluster (pid {})", wc.pid())),
        "{stdout}"
    );
    let s = wc.wait_status("the reload", |s| reload_counts(s) == (1, 0));
    assert_eq!(node_names(&s), ["a", "b"], "{s:#}");

    // --wait: the running process's verdict, read from its admin listener
    let only_b = server_config(wc.listen, wc.admin, &extra) + &web_group(&[("b", b, "")]);
    std::fs::write(&wc.config_path, &only_b).expect("write config");
    let out = reload_cli(&["reload", "--wait", "-c"], &wc.config_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("webcluster (pid {}) reloaded", wc.pid())),
        "{stdout}"
    );
    // Applied when it returned, not later.
    assert_eq!(reload_counts(&wc.status()), (2, 0));
    assert_eq!(node_names(&wc.status()), ["b"]);
    std::fs::write(&wc.config_path, &text).expect("write config");
    let out = reload_cli(
        &["reload", "--wait", "--pid", &wc.pid().to_string(), "-c"],
        &wc.config_path,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(reload_counts(&wc.status()), (3, 0));

    // a broken config: said so, and the running process is left alone
    let broken = text.replace("[admin]", "[admin]\nlisten_to = 1");
    std::fs::write(&wc.config_path, &broken).expect("write config");
    let out = reload_cli(&["reload", "-c"], &wc.config_path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let place = format!(
        "{}:{}:",
        wc.config_path.display(),
        line_of(&broken, "listen_to")
    );
    assert!(
        stderr.contains("was not signalled") && stderr.contains(&place),
        "{stderr}"
    );
    assert_eq!(reload_counts(&wc.status()), (3, 0));
    let out = reload_cli(&["reload", "--wait", "-c"], &wc.config_path);
    assert!(
        !out.status.success(),
        "a broken config: reload --wait fails"
    );
    assert_eq!(reload_counts(&wc.status()), (3, 0));

    // no pid_file in the config: a clear refusal
    let no_pid = run_dir.path().join("no-pid.toml");
    std::fs::write(
        &no_pid,
        server_config(wc.listen, wc.admin, "") + &web_group(&[("a", a, "")]),
    )
    .expect("write config");
    let out = reload_cli(&["reload", "-c"], &no_pid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no `pid_file`") && stderr.contains(&no_pid.display().to_string()),
        "{stderr}"
    );

    // a pid_file that does not exist (nothing running): said so
    let missing = run_dir.path().join("missing.toml");
    let gone = run_dir.path().join("gone.pid");
    std::fs::write(
        &missing,
        server_config(
            wc.listen,
            wc.admin,
            &format!("pid_file = \"{}\"", gone.display()),
        ) + &web_group(&[("a", a, "")]),
    )
    .expect("write config");
    let out = reload_cli(&["reload", "-c"], &missing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot read the pid file") && stderr.contains("gone.pid"),
        "{stderr}"
    );
    // the running process was not disturbed
    assert_eq!(reload_counts(&wc.status()), (3, 0));
}

#[test]
fn changed_listener_is_kept_with_a_warning_and_the_rest_applies() {
    let nodes = start_nodes(&["a", "b"], Duration::ZERO);
    let (a, b) = (nodes.addr(0), nodes.addr(1));
    let wc = Webcluster::start(|l, adm| {
        server_config(l, adm, "") + &web_group(&[("a", a, ""), ("b", b, "")])
    });
    wc.wait_all_up();
    let other = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let text = server_config(other, wc.admin, "")
        .replace("grace_period = \"30s\"", "grace_period = \"1s\"")
        .replace("log_level = \"info\"", "log_level = \"debug\"")
        + &web_group(&[("a", a, "weight = 4")]);
    let s = wc.reload_with(&text);
    assert_eq!(reload_counts(&s), (1, 0), "{s:#}");
    assert_eq!(node_names(&s), ["a"], "{s:#}");
    assert_eq!(node(&s, "a")["weight"], 4, "{s:#}");
    wait_log(&wc, "cannot change without a restart");
    let log = wc.log();
    let warning = log
        .lines()
        .find(|l| l.contains("cannot change without a restart"))
        .unwrap();
    assert!(
        warning.contains("WARN")
            && warning.contains(&wc.listen.to_string())
            && warning.contains(&other.to_string()),
        "{warning}"
    );
    // neither can the grace period nor the log filter
    for kept in ["grace_period 30s -> 1s", "log_level \"info\" -> \"debug\""] {
        assert!(
            log.lines()
                .any(|l| l.contains(kept) && l.contains("cannot change without a restart")),
            "no warning about {kept}:\n{log}"
        );
    }
    // the old listener serves, with the new node list
    let counts = tally(wc.listen, 6);
    assert_eq!(counts.get("a"), Some(&6), "{counts:?}");
    assert!(
        TcpStream::connect(other).is_err(),
        "nothing may listen on the new address"
    );
}

#[test]
fn removed_node_finishes_its_requests_in_flight() {
    let nodes = start_nodes(&["a", "b"], Duration::from_millis(1500));
    let (a, b) = (nodes.addr(0), nodes.addr(1));
    let wc = Webcluster::start(|l, adm| {
        server_config(l, adm, "") + &web_group(&[("a", a, ""), ("b", b, "")])
    });
    wc.wait_all_up();
    let listen = wc.listen;
    let requests: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || http_get(listen, "/node", &[])))
        .collect();
    wc.wait_status("one request in flight on each node", |s| {
        node(s, "a")["inflight"] == 1 && node(s, "b")["inflight"] == 1
    });
    let text = server_config(wc.listen, wc.admin, "") + &web_group(&[("a", a, "")]);
    let s = wc.reload_with(&text);
    assert_eq!(node_names(&s), ["a"], "{s:#}");
    let mut answered: Vec<String> = requests
        .into_iter()
        .map(|r| {
            let r = r.join().expect("client thread").expect("request in flight");
            assert_eq!(r.status, 200, "{}", r.body);
            r.body
        })
        .collect();
    answered.sort();
    assert_eq!(answered, ["a", "b"], "b finished its request after removal");
    assert_eq!(tally(wc.listen, 2).get("a"), Some(&2));
}

/// Reloads in `repeated_reloads_under_load_lose_no_request` (even: the last
/// config is the first one).
const RELOADS: usize = 10;

#[test]
fn repeated_reloads_under_load_lose_no_request() {
    let nodes = start_nodes(&["a", "b", "c"], Duration::from_millis(2));
    let (a, b, c) = (nodes.addr(0), nodes.addr(1), nodes.addr(2));
    let two = |l, adm| server_config(l, adm, "") + &web_group(&[("a", a, ""), ("b", b, "")]);
    let wc = Webcluster::start(two);
    wc.wait_all_up();
    let configs = [
        server_config(wc.listen, wc.admin, "")
            + &web_group(&[("a", a, ""), ("b", b, "weight = 2"), ("c", c, "")]),
        two(wc.listen, wc.admin),
    ];

    // 4 keep-alive clients, and 1 that opens a new connection per request
    let load = Load::start(wc.listen, 4, 3000, Duration::from_secs(60));
    let fresh = Load::start_closing(wc.listen, 1, 3000, Duration::from_secs(60), 1);
    load.wait_more(100);
    for i in 0..RELOADS {
        let s = wc.reload_with(&configs[i % 2]);
        assert_eq!(reload_counts(&s), (i as u64 + 1, 0), "{s:#}");
        load.wait_more(40);
    }
    let (counted, fresh) = (load.finish(), fresh.finish());
    assert_nothing_lost("reloads under load", &counted, &fresh);
    assert!(counted.ok() >= 500, "{}", counted.summary());
    assert!(fresh.ok() >= 10, "{}", fresh.summary());
    let s = wc.status();
    assert_eq!(reload_counts(&s), (RELOADS as u64, 0), "{s:#}");
    assert_eq!(node_names(&s), ["a", "b"], "{s:#}");
    wait_until("a log line per reload", Duration::from_secs(10), || {
        wc.log().matches("config reloaded").count() == RELOADS
    });
    let metrics = http_get(wc.admin, "/metrics", &[])
        .expect("GET /metrics")
        .body;
    assert!(
        metrics.contains(&format!(
            "webcluster_config_reloads_total{{result=\"success\"}} {RELOADS}"
        )),
        "{metrics}"
    );
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits() {
    let nodes = start_nodes(&["a", "b"], Duration::from_millis(1500));
    let (a, b) = (nodes.addr(0), nodes.addr(1));
    let mut wc = Webcluster::start(|l, adm| {
        server_config(l, adm, "") + &web_group(&[("a", a, ""), ("b", b, "")])
    });
    wc.wait_all_up();
    let listen = wc.listen;
    let requests: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || http_get(listen, "/node", &[])))
        .collect();
    // Two more on keep-alive connections: their responses, finished while
    // the server stops, must say the connection closes.
    let kept: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(move || {
                let mut c = KeepAliveClient::connect(listen).expect("connect");
                c.get("/node", &[])
            })
        })
        .collect();
    wc.wait_status("6 requests in flight", |s| s["totals"]["inflight"] == 6);
    wc.signal(Signal::SIGTERM);
    // the listener is closed: new connections are refused (while the
    // requests in flight still run)
    wait_log(&wc, &format!("Shutting down {listen}"));
    wait_until(
        "new connections to be refused after SIGTERM",
        Duration::from_secs(5),
        || TcpStream::connect(listen).is_err(),
    );
    for r in requests {
        let r = r.join().expect("client thread").expect("request in flight");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for r in kept {
        let r = r
            .join()
            .expect("client thread")
            .expect("keep-alive request in flight");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    }
    let status = wc
        .wait_exit(Duration::from_secs(10))
        .expect("webcluster exits once drained, well before its 30 s grace period");
    assert!(status.success(), "{status}\n{}", wc.log());
    assert!(wc
        .log()
        .contains("graceful shutdown: 0 request(s) still in flight"));
    // Written to a file: no terminal colour codes.
    assert!(!wc.log().contains('\x1b'), "{}", wc.log());
}

#[test]
fn the_json_log_format_writes_one_object_per_line() {
    let nodes = start_nodes(&["a"], Duration::ZERO);
    let a = nodes.addr(0);
    let wc = Webcluster::start(|l, adm| {
        server_config(l, adm, "log_format = \"json\"") + &web_group(&[("a", a, "")])
    });
    wc.wait_all_up();
    let r = http_get(wc.listen, "/server-status", &[]).expect("a refused request");
    assert_eq!(r.status, 403);
    wait_log(&wc, "refused a request for a node status page");
    let log = wc.log();
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{log}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 2, "{log}");
}

/// A CPU list as the kernel writes it (`0-1,3`).
fn cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for item in text.trim().split(',').filter(|i| !i.is_empty()) {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
        cpus.extend(a..=b);
    }
    cpus
}

/// `Cpus_allowed_list` of a task (a process or one of its threads).
fn cpus_allowed(task: &Path) -> Vec<usize> {
    let status = std::fs::read_to_string(task.join("status")).expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list");
    cpu_list(line)
}

/// `cpu_affinity = "auto"`: each of the two proxy worker threads runs on
/// a CPU of its own, the first two this process may use (the kernel's own
/// record of each thread), and serves requests there; the other threads
/// keep every CPU.
#[test]
fn cpu_affinity_auto_puts_each_worker_on_a_cpu_of_its_own() {
    let allowed = cpus_allowed(Path::new("/proc/self"));
    let nodes = start_nodes(&["a"], Duration::ZERO);
    let a = nodes.addr(0);
    let wc = Webcluster::start(|l, adm| {
        server_config(l, adm, "cpu_affinity = \"auto\"") + &web_group(&[("a", a, "")])
    });
    wc.wait_all_up();
    wait_log(&wc, "proxy worker thread 1 runs on CPU");
    let mut workers = Vec::new();
    let mut others = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{}/task", wc.pid())).expect("tasks");
    for task in tasks {
        let task = task.expect("task").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == "webcluster prox" {
            workers.push(cpus_allowed(&task));
        } else {
            others.push(cpus_allowed(&task));
        }
    }
    workers.sort();
    let mut want = vec![vec![allowed[0]], vec![allowed[1 % allowed.len()]]];
    want.sort();
    assert_eq!(workers, want, "{}", wc.log());
    assert!(others.iter().all(|o| *o == allowed), "{others:?}");
    assert_eq!(tally(wc.listen, 4).get("a"), Some(&4));
}

#[test]
fn binary_upgrade_under_load_loses_no_request() {
    let nodes = start_nodes(&["a", "b"], Duration::from_millis(3));
    let (a, b) = (nodes.addr(0), nodes.addr(1));
    let run_dir = tempfile::tempdir().expect("temp dir");
    let pid_file = run_dir.path().join("webcluster.pid");
    let sock = run_dir.path().join("upgrade.sock");
    let extra = format!(
        "pid_file = \"{}\"\nupgrade_sock = \"{}\"",
        pid_file.display(),
        sock.display()
    );
    let mut wc = Webcluster::start(|l, adm| {
        server_config(l, adm, &extra) + &web_group(&[("a", a, ""), ("b", b, "")])
    });
    wc.wait_all_up();
    let pid_a = wc.pid();
    wait_until("A's pid file", Duration::from_secs(10), || {
        read_pid(&pid_file) == Some(pid_a)
    });

    // 2 keep-alive clients, and 1 that opens a new connection per request
    // (the listening socket changes hands under it)
    let load = Load::start(wc.listen, 2, 5000, Duration::from_secs(60));
    let fresh = Load::start_closing(wc.listen, 1, 5000, Duration::from_secs(60), 1);
    load.wait_more(100);
    // B first: it waits on upgrade_sock for A's listening sockets...
    let mut old = KillOnDrop(wc.take_child().expect("process A"));
    wc.spawn(&["--upgrade"]);
    let pid_b = wc.pid();
    assert_ne!(pid_a, pid_b);
    wait_until(
        "B listening on the upgrade socket",
        Duration::from_secs(10),
        || sock.exists(),
    );
    // ...then SIGQUIT to A: it hands them over, drains and exits.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid_a), Signal::SIGQUIT).expect("SIGQUIT");
    wait_until("B's pid in the pid file", Duration::from_secs(10), || {
        read_pid(&pid_file) == Some(pid_b)
    });
    let status = wait_child(&mut old.0, Duration::from_secs(20)).expect("A exits");
    assert!(status.success(), "A: {status}\n{}", wc.log());
    load.wait_more(200);
    fresh.wait_more(20);
    let (counted, fresh) = (load.finish(), fresh.finish());
    assert_nothing_lost("binary upgrade under load", &counted, &fresh);

    // B serves alone now: proxy and admin listeners came through
    assert!(wc.wait_exit(Duration::ZERO).is_none(), "B is running");
    assert_eq!(read_pid(&pid_file), Some(pid_b));
    let counts = tally(wc.listen, 10);
    assert_eq!(counts.values().sum::<usize>(), 10, "{counts:?}");
    // A is gone, so whoever answers on the admin address is B
    let s = wc.status();
    assert_eq!(reload_counts(&s), (0, 0), "{s:#}");
    let log = wc.log();
    assert!(log.contains("listener sockets sent"), "{log}");
}

#[test]
fn sighup_as_soon_as_the_pid_file_appears_does_not_kill_the_process() {
    // `webcluster reload` (and systemd's ExecReload) may signal the pid as
    // soon as the pid file exists: SIGHUP's default action is to terminate,
    // so the process must not be left with it while starting.
    let nodes = start_nodes(&["a"], Duration::ZERO);
    let a = nodes.addr(0);
    let (mut round, mut lost_races) = (0, 0);
    while round < 5 {
        let run_dir = tempfile::tempdir().expect("temp dir");
        let pid_file = run_dir.path().join("webcluster.pid");
        let config = run_dir.path().join("webcluster.toml");
        let listen = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let extra = format!("pid_file = \"{}\"", pid_file.display());
        std::fs::write(
            &config,
            server_config(listen, admin, &extra) + &web_group(&[("a", a, "")]),
        )
        .expect("write config");
        let log = std::fs::File::create(run_dir.path().join("log")).expect("log");
        let mut child = KillOnDrop(
            Command::new(binary())
                .arg("run")
                .arg("-c")
                .arg(&config)
                .stdout(log.try_clone().expect("dup"))
                .stderr(log)
                .spawn()
                .expect("start webcluster"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while read_pid(&pid_file).is_none() && Instant::now() < deadline {
            if child.0.try_wait().ok().flatten().is_some() {
                break;
            }
            thread::sleep(Duration::from_micros(200));
        }
        if child.0.try_wait().ok().flatten().is_some() && lost_races < 3 {
            let text = std::fs::read_to_string(run_dir.path().join("log")).unwrap_or_default();
            if lost_port_race(&text) {
                // Not this test's subject: start the round again on fresh ports.
                lost_races += 1;
                continue;
            }
        }
        // a reload asked for right then is not lost either
        std::fs::write(
            &config,
            server_config(listen, admin, &extra) + &web_group(&[("a", a, "weight = 7")]),
        )
        .expect("write config");
        let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGHUP);
        let up = (0..200).any(|_| {
            if child.0.try_wait().ok().flatten().is_some() {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
            http_get(admin, "/healthz", &[]).is_ok_and(|r| r.status == 200)
        });
        let weight = |s: &str| -> Option<u64> {
            let v: serde_json::Value = serde_json::from_str(s).ok()?;
            node(&v, "a")["weight"].as_u64()
        };
        let reloaded = up
            && (0..200).any(|_| {
                let r = http_get(admin, "/status.json", &[]);
                if r.is_ok_and(|r| weight(&r.body) == Some(7)) {
                    return true;
                }
                thread::sleep(Duration::from_millis(50));
                false
            });
        let exited = child.0.try_wait().ok().flatten();
        drop(child);
        let text = std::fs::read_to_string(run_dir.path().join("log")).unwrap_or_default();
        // The listeners bind after the pid file is written: a port another
        // socket took meanwhile ends the process then too. Not this test's
        // subject either: the round starts again on fresh ports.
        if exited.is_some() && lost_port_race(&text) && lost_races < 3 {
            lost_races += 1;
            continue;
        }
        assert!(
            up && exited.is_none(),
            "round {round}: the early SIGHUP ended the process ({exited:?}):\n{text}"
        );
        assert!(
            reloaded,
            "round {round}: the early reload was lost:\n{text}"
        );
        round += 1;
    }
}
