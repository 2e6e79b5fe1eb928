//! Process handling shared by the Apache and nginx test nodes.
//!
//! A server runs in the foreground as a child of the test process, in a
//! process group of its own (its pid is the group id), so stopping it can reach
//! every process it forked: worker children, the cgid daemon, CGI scripts.
//! [`ServerProcess::stop`] sends SIGTERM to the master, waits (bounded) for it,
//! then SIGKILLs whatever is left in the group and waits (bounded) until the
//! group is empty.
//!
//! Each instance directory records the test process's pid and the server's
//! group id; [`sweep_stale_instances`] kills servers left behind by a test run
//! that was itself killed (Ctrl-C, timeout) before its `Drop`s ran.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

/// Prefix of every instance directory under the system temp dir.
pub const INSTANCE_PREFIX: &str = "webcluster-node-";

/// How long a master gets to exit after SIGTERM before the group is SIGKILLed.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// How long to wait for a SIGKILLed group to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

const POLL: Duration = Duration::from_millis(20);

/// A server master process running in its own process group.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pgid: u32,
    exit: Option<ExitStatus>,
}

impl ServerProcess {
    /// Spawns `cmd` in a new process group, stdin from /dev/null, stdout and
    /// stderr appended to `<dir>/stdout.log` / `<dir>/stderr.log`, and records
    /// the owner/group ids in `dir` for [`sweep_stale_instances`].
    pub fn spawn(mut cmd: Command, dir: &Path) -> io::Result<Self> {
        let open = |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
        };
        cmd.stdin(Stdio::null())
            .stdout(open("stdout.log")?)
            .stderr(open("stderr.log")?)
            .process_group(0);
        let child = cmd.spawn()?;
        let pgid = child.id();
        fs::write(dir.join("owner.pid"), std::process::id().to_string())?;
        fs::write(dir.join("server.pgid"), pgid.to_string())?;
        Ok(Self {
            child,
            pgid,
            exit: None,
        })
    }

    /// The master's pid (also the process group id).
    pub fn pid(&self) -> u32 {
        self.pgid
    }

    /// The master's exit status if it has exited (non-blocking).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Sends `signal` (a name such as "STOP", "CONT", "HUP") to the whole group.
    pub fn signal_group(&self, signal: &str) {
        kill(signal, &format!("-{}", self.pgid));
    }

    /// Stops the server and everything in its process group. Bounded: SIGTERM
    /// to the master, up to 10 s for it to exit, then SIGKILL to the group and
    /// up to 5 s for the group to empty. Idempotent.
    pub fn stop(&mut self) {
        if self.exited().is_none() {
            // A frozen (SIGSTOPped) group must run to handle SIGTERM.
            self.signal_group("CONT");
            kill("TERM", &self.pgid.to_string());
            let deadline = Instant::now() + TERM_GRACE;
            while self.exited().is_none() && Instant::now() < deadline {
                thread::sleep(POLL);
            }
        }
        if self.exited().is_none() || !group_members(self.pgid).is_empty() {
            self.signal_group("KILL");
        }
        if self.exit.is_none() {
            self.exit = self.child.wait().ok();
        }
        let deadline = Instant::now() + KILL_WAIT;
        while !group_members(self.pgid).is_empty() && Instant::now() < deadline {
            thread::sleep(POLL);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` to `target` (a pid, or `-pgid` for a group) through the
/// shell's `kill` builtin, ignoring errors (the target may be gone already).
fn kill(signal: &str, target: &str) {
    let _ = Command::new("sh")
        .args([
            "-c",
            "kill -s \"$1\" -- \"$2\" 2>/dev/null",
            "sh",
            signal,
            target,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Live (non-zombie) processes whose process group is `pgid`, read from /proc.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the parenthesised command: state ppid pgrp ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("Z");
            let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
            state != "Z" && state != "X" && pgrp == Some(pgid)
        })
        .collect()
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Kills servers (and removes their directories) left by earlier test
/// processes that no longer exist. Runs once per test process.
pub fn sweep_stale_instances() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(INSTANCE_PREFIX) {
                continue;
            }
            sweep_one(&entry.path());
        }
    });
}

fn read_u32(path: PathBuf) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn sweep_one(dir: &Path) {
    let Some(owner) = read_u32(dir.join("owner.pid")) else {
        return; // Being set up right now by someone, or not ours.
    };
    if Path::new(&format!("/proc/{owner}")).exists() {
        return; // Its test process is still running.
    }
    if let Some(pgid) = read_u32(dir.join("server.pgid")) {
        let marker = dir.to_string_lossy().into_owned();
        let ours = group_members(pgid)
            .into_iter()
            .any(|pid| cmdline(pid).contains(&marker));
        if ours {
            kill("KILL", &format!("-{pgid}"));
        }
    }
    let _ = fs::remove_dir_all(dir);
}

/// Starts a web node with `cmd` (in `dir`) and waits, at most `limit`, until
/// `GET /node` answers with its `name`; on failure the process is stopped
/// and the error says why (`bin` names the program in it).
pub fn start_node(
    cmd: Command,
    dir: &Path,
    bin: &str,
    addr: SocketAddr,
    name: &str,
    limit: Duration,
) -> Result<ServerProcess, String> {
    let mut server =
        ServerProcess::spawn(cmd, dir).map_err(|e| format!("cannot run {bin}: {e}"))?;
    let ready = wait_until_ready(&mut server, limit, || {
        super::http::http_get(addr, "/node", &[]).is_ok_and(|r| r.status == 200 && r.body == name)
    });
    match ready {
        Ok(()) => Ok(server),
        Err(e) => {
            server.stop();
            Err(e)
        }
    }
}

/// Polls `ready` every 50 ms until it returns true, the server exits, or
/// `limit` passes. Returns Ok(()) when ready, Err(description) otherwise.
pub fn wait_until_ready(
    server: &mut ServerProcess,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = server.exited() {
            return Err(format!("the server exited during startup ({status})"));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the server was not ready within {limit:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}
