//! Starting the real `webcluster` binary for a test: a config written to a
//! temp dir, ephemeral loopback ports, readiness by polling the admin
//! listener, signals, the log, and the status JSON. Killed when dropped.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::http::http_get;

pub struct Webcluster {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_webcluster")
}

/// `[server]` and `[admin]` sections for the given ports; tests append
/// their groups (and may add keys to `[server]` with `extra_server`).
pub fn base_config(listen: SocketAddr, admin: SocketAddr, extra_server: &str) -> String {
    format!(
        "[server]\nlisten = [\"{listen}\"]\nthreads = 2\ngrace_period = \"5s\"\nlog_level = \"info\"\n{extra_server}\n\n[admin]\nlisten = \"{admin}\"\n\n"
    )
}

/// A `[[group]]` polling its nodes every 200 ms, with `extra` keys and
/// (name, address, extra node keys) nodes.
pub fn group_config(name: &str, extra: &str, nodes: &[(&str, SocketAddr, &str)]) -> String {
    let mut s = format!(
        "[[group]]\nname = \"{name}\"\nscrape_interval = \"200ms\"\nscrape_timeout = \"200ms\"\n{extra}\n"
    );
    for (n, addr, more) in nodes {
        s.push_str(&format!(
            "  [[group.node]]\n  name = \"{n}\"\n  address = \"{addr}\"\n  {more}\n"
        ));
    }
    s
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// How often `start` tries fresh ports when another socket took one first.
pub const PORT_TRIES: usize = 3;

/// Whether a webcluster that exited while starting lost its listen or
/// admin port to another socket: a port `free_port()` found free is back in
/// the kernel's ephemeral range until webcluster binds it, and any outgoing
/// connection of a test running in parallel may take it meanwhile.
pub fn lost_port_race(log: &str) -> bool {
    log.contains("Address already in use")
}

/// Until a webcluster process answers `/healthz` on its admin listener
/// `admin` (20 s at most); `Err` with what to report, its log (`log_path`)
/// included, when it exited first or never answered.
pub fn wait_ready(child: &mut Child, admin: SocketAddr, log_path: &Path) -> Result<(), String> {
    let log = || fs::read_to_string(log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("webcluster exited early ({status}):\n{}", log()));
        }
        if http_get(admin, "/healthz", &[]).is_ok_and(|r| r.status == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "webcluster did not come up within 20 s:\n{}",
        log()
    ))
}

/// Until a socket of this network namespace listens on `port` (5 s at
/// most; then the test goes on and meets what it meets). Read from
/// `/proc/net/tcp{,6}`: no connection is made, which a test could count.
fn wait_listening(port: u16) {
    let listening = || {
        ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
            fs::read_to_string(table).is_ok_and(|t| {
                t.lines().skip(1).any(|line| {
                    // sl local_address rem_address st ...
                    let mut cols = line.split_whitespace();
                    let local = cols.nth(1).unwrap_or("");
                    let state = cols.nth(1).unwrap_or("");
                    let local_port = local
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    state == "0A" && local_port == Some(port)
                })
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !listening() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Webcluster {
    /// Start with a config made by `make(listen, admin)`; waits until the
    /// admin listener answers. If a port was taken before webcluster could
    /// bind it, starts again on fresh ports (up to `PORT_TRIES` times).
    pub fn start(make: impl Fn(SocketAddr, SocketAddr) -> String) -> Webcluster {
        for attempt in 1..=PORT_TRIES {
            let listen = loopback(free_port());
            let admin = loopback(free_port());
            let dir = tempfile::tempdir().expect("temp dir");
            let config_path = dir.path().join("webcluster.toml");
            fs::write(&config_path, make(listen, admin)).expect("write config");
            let mut wc = Webcluster {
                child: None,
                dir,
                config_path,
                listen,
                admin,
            };
            wc.spawn_child(&[]);
            match wc.wait_ready() {
                Ok(()) => return wc,
                Err(log) if attempt < PORT_TRIES && lost_port_race(&log) => {
                    eprintln!("webcluster lost a port to another socket, trying fresh ports");
                }
                Err(log) => panic!("{log}"),
            }
        }
        unreachable!("the last try returns or panics")
    }

    /// Start the binary (again) with `run -c <config>` plus `extra` args,
    /// and wait until it answers.
    pub fn spawn(&mut self, extra: &[&str]) {
        self.spawn_child(extra);
        if let Err(log) = self.wait_ready() {
            panic!("{log}");
        }
    }

    fn spawn_child(&mut self, extra: &[&str]) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let child = Command::new(binary())
            .arg("run")
            .arg("-c")
            .arg(&self.config_path)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start webcluster");
        self.child = Some(child);
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("webcluster.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Until the admin listener answers; `Err` with what to report when
    /// the process exited first or never answered.
    fn wait_ready(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        match self.child.as_mut() {
            Some(child) => wait_ready(child, self.admin, &log_path)?,
            None => return Err("webcluster is not running".to_owned()),
        }
        // pingora starts the proxy service after the admin one: a test's
        // first request could otherwise find its port closed.
        wait_listening(self.listen.port());
        Ok(())
    }

    /// The admin listener's `/status.json`.
    pub fn status(&self) -> serde_json::Value {
        let r = http_get(self.admin, "/status.json", &[]).expect("GET /status.json");
        assert_eq!(r.status, 200, "status.json: {}", r.body);
        serde_json::from_str(&r.body).expect("status.json is JSON")
    }

    /// Poll `/status.json` until `cond` holds (bounded); panics with the
    /// last status and the log otherwise.
    pub fn wait_status(
        &self,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            last = self.status();
            if cond(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for: {what}\nlast status: {last:#}\nlog:\n{}",
            self.log()
        );
    }

    /// Wait until every node of every group is `up`.
    pub fn wait_all_up(&self) -> serde_json::Value {
        self.wait_status("all nodes up", |s| {
            nodes(s).iter().all(|n| n["state"] == "up")
        })
    }

    /// Replace the config file with `text` and send SIGHUP; waits until the
    /// reload counters moved (ok or failed) and returns the status then.
    pub fn reload_with(&self, text: &str) -> serde_json::Value {
        let before = reload_counts(&self.status());
        fs::write(&self.config_path, text).expect("write config");
        self.signal(nix::sys::signal::Signal::SIGHUP);
        self.wait_status("the reload to be counted", |s| reload_counts(s) != before)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal");
    }

    /// Wait (bounded) for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Take the child out (for upgrade tests that start a second process).
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for Webcluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- webcluster log ----\n{}", self.log());
        }
    }
}

/// (reloads_ok, reloads_failed) of a status JSON.
pub fn reload_counts(s: &serde_json::Value) -> (u64, u64) {
    (
        s["config"]["reloads_ok"].as_u64().unwrap_or(u64::MAX),
        s["config"]["reloads_failed"].as_u64().unwrap_or(u64::MAX),
    )
}

/// Every node object of a status JSON, all groups.
pub fn nodes(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["nodes"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The node object named `name` (first match in any group).
pub fn node(status: &serde_json::Value, name: &str) -> serde_json::Value {
    nodes(status)
        .into_iter()
        .find(|n| n["name"] == name)
        .unwrap_or(serde_json::Value::Null)
}
