//! Test-support library for webcluster's integration tests (`mod support;`).
//!
//! It starts REAL web nodes from the Debian packages, each in its own temp
//! directory on 127.0.0.1 (or another loopback address) and an ephemeral port:
//!
//! * [`ApacheNode`]: Apache httpd (prefork or event MPM) from the one config
//!   template `docker/apache/node.conf`, serving `/`, `/node`, `/sleep?ms=N`,
//!   `/headers`, `/status-code?code=N` and `/server-status` (mod_status,
//!   ExtendedStatus On, allowed only from the given addresses);
//! * [`NginxNode`]: nginx from `docker/nginx/node.conf`, serving `/`, `/node`,
//!   `/headers` and `stub_status` at `/nginx_status`;
//! * both are a [`node::TestNode`] (start, stop, freeze, logs) of their
//!   [`node::Server`] kind;
//! * a small blocking HTTP/1.1 client ([`http_get`], [`http_get_from`],
//!   [`KeepAliveClient`], [`capture_status`]);
//! * [`webcluster::Webcluster`]: the real `webcluster` binary under test;
//! * helpers to read status pages ([`status_field`], [`busy_workers`], ...)
//!   and to wait for a condition, bounded ([`wait_until`]).
//!
//! Nodes are stopped (master and every child) when dropped. When a test panics
//! while a node is alive, the node's error log is printed to stderr and its
//! logs are copied to `target/test-output/nodes/`.
//!
//! If apache2 or nginx is missing, starting a node panics with a message
//! telling to run `bash scripts/test.sh`, which installs them: nothing is
//! skipped silently.
#![allow(dead_code)]

pub mod apache;
pub mod demo;
pub mod http;
pub mod nginx;
pub mod node;
pub mod process;
pub mod webcluster;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// Not every test uses every re-export.
#[allow(unused_imports)]
pub use apache::{ApacheNode, ApacheOpts, Mpm};
#[allow(unused_imports)]
pub use http::{
    capture_status, connect_from, http_get, http_get_from, http_request, KeepAliveClient, Response,
};
#[allow(unused_imports)]
pub use nginx::{NginxNode, NginxOpts};

/// A free TCP port on 127.0.0.1 (bind port 0, read it, drop the listener).
/// Never the same port twice in one test process: the kernel may hand a
/// port just released to the next bind, so two calls in a row (a proxy's
/// listener and its admin listener, or two threads starting servers) could
/// otherwise get the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0 to find a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no port that was not handed out already")
}

/// `127.0.0.<n>`: an extra loopback address (Linux routes all of 127/8 to lo).
pub fn loopback(n: u8) -> std::net::IpAddr {
    Ipv4Addr::new(127, 0, 0, n).into()
}

/// Absolute path of `rel` inside the crate (where `docker/` and `scripts/` live).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Where tests put screenshots, logs and other artifacts: `$WEBCLUSTER_TEST_OUTPUT`
/// if set, else `<crate>/target/test-output`. Created if missing.
pub fn test_output_dir() -> PathBuf {
    let dir = std::env::var_os("WEBCLUSTER_TEST_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("target/test-output"));
    fs::create_dir_all(&dir).expect("create the test output directory");
    dir
}

/// Panics with a clear message unless `path` exists (a package's binary).
pub fn require_installed(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} not found: the Debian package `{package}` is not installed. \
         Run `bash scripts/test.sh` (it installs apache2, nginx and the other \
         test dependencies), or `apt-get install {package}`."
    );
}

/// True when this process runs as root (effective uid 0).
pub fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// True when `user` is in /etc/passwd.
pub fn user_exists(user: &str) -> bool {
    fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.split(':').next() == Some(user)))
        .unwrap_or(false)
}

/// The unprivileged (user, group) that servers started as root switch to.
pub fn worker_user() -> (&'static str, &'static str) {
    if user_exists("www-data") {
        ("www-data", "www-data")
    } else {
        ("nobody", "nogroup")
    }
}

/// Node names end up in configs, file names and HTML: keep them plain.
pub(crate) fn check_node_name(name: &str) {
    assert!(
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "node name {name:?} must be 1-64 characters of [A-Za-z0-9._-]"
    );
}

/// A fresh instance directory (mode 0755 so the server's unprivileged workers
/// can read it) under the system temp dir, removed when dropped.
pub(crate) fn instance_dir(kind: &str, name: &str) -> tempfile::TempDir {
    process::sweep_stale_instances();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}{kind}-{name}-", process::INSTANCE_PREFIX))
        .tempdir()
        .expect("create a temp dir for a test node");
    set_mode(dir.path(), 0o755);
    dir
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The last `max_lines` lines of a log file ("" if unreadable).
pub fn tail(path: &Path, max_lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

/// Called from a node's `Drop` while the test is panicking: prints the error
/// log and copies the node's logs under `test_output_dir()/nodes/`.
pub(crate) fn report_failed_node(label: &str, error_log: &Path, logs: &[PathBuf]) {
    eprintln!(
        "---- {label}: error log {} (last 50 lines) ----\n{}\n---- end of {label} error log ----",
        error_log.display(),
        tail(error_log, 50)
    );
    let dest = test_output_dir().join("nodes").join(label);
    if fs::create_dir_all(&dest).is_ok() {
        for log in logs {
            if let Some(file) = log.file_name() {
                let _ = fs::copy(log, dest.join(file));
            }
        }
        eprintln!("---- {label}: logs copied to {} ----", dest.display());
    }
}

/// The value of `key` in a `Key: value` status page (Apache `?auto`,
/// e.g. `BusyWorkers`), trimmed.
pub fn status_field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// `BusyWorkers` of an Apache `/server-status?auto` body.
pub fn busy_workers(body: &str) -> Option<u32> {
    status_field(body, "BusyWorkers")?.parse().ok()
}

/// `IdleWorkers` of an Apache `/server-status?auto` body.
pub fn idle_workers(body: &str) -> Option<u32> {
    status_field(body, "IdleWorkers")?.parse().ok()
}

/// The `Scoreboard` string of an Apache `/server-status?auto` body.
pub fn scoreboard(body: &str) -> Option<&str> {
    status_field(body, "Scoreboard")
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` if it still
/// does not after `limit`. For waiting on state changes, never as a timing
/// assertion: pick a `limit` far above the expected time.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Active connections` of an nginx stub_status body.
pub fn nginx_active_connections(body: &str) -> Option<u32> {
    status_field(body, "Active connections")?.parse().ok()
}

/// The `accepts` counter of an nginx stub_status body (connections accepted
/// since start): the first number on the line after
/// `server accepts handled requests`.
pub fn nginx_accepts(body: &str) -> Option<u64> {
    let mut lines = body.lines();
    lines.find(|l| l.trim() == "server accepts handled requests")?;
    lines.next()?.split_whitespace().next()?.parse().ok()
}
