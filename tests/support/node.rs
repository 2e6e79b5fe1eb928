//! [`TestNode`]: what every real web node of the tests shares, whatever the
//! server: its own temp directory, an address on loopback (an ephemeral port
//! retried when another process takes it first), the start that waits for
//! `GET /node`, stop / restart / freeze / thaw, its logs, and the report of
//! its logs when a test panics while it runs.
//!
//! What differs per server (binary, config, command line, log paths) is a
//! [`Server`] impl: `apache.rs` and `nginx.rs`, whose `ApacheNode` and
//! `NginxNode` are `TestNode<Apache>` and `TestNode<Nginx>`.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{start_node, ServerProcess};

/// How long a node may take to answer `GET /node` after being started.
pub const START_LIMIT: Duration = Duration::from_secs(10);

/// One kind of web server run as a test node.
pub trait Server {
    /// How to start a node of this kind.
    type Opts: Clone + std::fmt::Debug;
    /// The server's binary.
    const BIN: &'static str;
    /// The Debian package that installs it.
    const PACKAGE: &'static str;
    /// `apache` / `nginx`: the instance directory's prefix and the label of
    /// a failed node's saved logs.
    const LABEL: &'static str;
    /// Error and access log, relative to the node's directory.
    const ERROR_LOG: &'static str;
    const ACCESS_LOG: &'static str;
    /// Files (relative to the node's directory) saved when a test fails.
    const REPORT_FILES: &'static [&'static str];
    /// Path of the machine-readable status page.
    const STATUS_PATH: &'static str;

    fn name(o: &Self::Opts) -> &str;
    fn listen_ip(o: &Self::Opts) -> IpAddr;
    fn port(o: &Self::Opts) -> Option<u16>;
    fn allow_status_from(o: &Self::Opts) -> &[String];
    /// The options with `port` set.
    fn with_port(o: &Self::Opts, port: u16) -> Self::Opts;
    /// `Apache node "a" (prefork MPM)`: names the node in messages.
    fn describe(o: &Self::Opts) -> String;
    /// Server-specific checks of the options (panics).
    fn check(_o: &Self::Opts) {}
    /// Lays out the fresh node directory, once.
    fn prepare(_dir: &Path, _o: &Self::Opts) {}
    /// Writes what depends on the address, before each start attempt.
    fn configure(_dir: &Path, _o: &Self::Opts, _addr: SocketAddr) {}
    /// The command that runs the server in the foreground.
    fn command(dir: &Path, o: &Self::Opts, addr: SocketAddr) -> Command;
    /// Whether a failed start's error log says the port was taken.
    fn bind_failed(error_log: &str) -> bool;
}

/// A running web node; stopped (with all its children) on drop.
#[derive(Debug)]
pub struct TestNode<S: Server> {
    opts: S::Opts,
    addr: SocketAddr,
    server: Option<ServerProcess>,
    // Last: removed after the server is stopped.
    dir: tempfile::TempDir,
}

impl<S: Server> TestNode<S> {
    /// Starts a node and waits (up to 10 s) until `GET /node` answers with its
    /// name. Panics on failure, with the node's error log in the message.
    pub fn start(opts: S::Opts) -> Self {
        match Self::try_start(opts) {
            Ok(node) => node,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`TestNode::start`], returning the failure (with the error log)
    /// instead of panicking.
    pub fn try_start(opts: S::Opts) -> Result<Self, String> {
        super::require_installed(S::BIN, S::PACKAGE);
        super::check_node_name(S::name(&opts));
        assert!(
            !S::allow_status_from(&opts).is_empty(),
            "allow_status_from must name at least one address"
        );
        assert!(
            S::listen_ip(&opts).is_loopback(),
            "test nodes listen on loopback addresses only"
        );
        S::check(&opts);
        let dir = super::instance_dir(S::LABEL, S::name(&opts));
        S::prepare(dir.path(), &opts);
        let mut node = Self {
            addr: SocketAddr::new(S::listen_ip(&opts), S::port(&opts).unwrap_or(0)),
            opts,
            server: None,
            dir,
        };
        // An ephemeral port can be taken between free_port() and bind():
        // retry such bind failures with another port.
        let fixed_port = S::port(&node.opts).is_some();
        let attempts = if fixed_port { 1 } else { 3 };
        let mut last_err = String::new();
        for _ in 0..attempts {
            if !fixed_port {
                node.addr.set_port(super::free_port());
            }
            S::configure(node.dir.path(), &node.opts, node.addr);
            match node.launch() {
                Ok(()) => return Ok(node),
                Err(e) => {
                    let log = node.error_log();
                    last_err = format!(
                        "{} on {} failed to start: {e}\ncommand: {}\n\
                         ---- error log ----\n{log}\n---- stderr ----\n{}",
                        S::describe(&node.opts),
                        node.addr,
                        node.command_line(),
                        fs::read_to_string(node.dir.path().join("stderr.log")).unwrap_or_default(),
                    );
                    if !S::bind_failed(&log) {
                        break;
                    }
                }
            }
        }
        Err(last_err)
    }

    fn command(&self) -> Command {
        S::command(self.dir.path(), &self.opts, self.addr)
    }

    /// The command line used to start the node (for messages).
    pub fn command_line(&self) -> String {
        let cmd = self.command();
        let mut line = cmd.get_program().to_string_lossy().into_owned();
        for arg in cmd.get_args() {
            let arg = arg.to_string_lossy();
            if arg.contains(' ') {
                line.push_str(&format!(" '{arg}'"));
            } else {
                line.push(' ');
                line.push_str(&arg);
            }
        }
        line
    }

    fn launch(&mut self) -> Result<(), String> {
        let server = start_node(
            self.command(),
            self.dir.path(),
            S::BIN,
            self.addr,
            S::name(&self.opts),
            START_LIMIT,
        )?;
        self.server = Some(server);
        Ok(())
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        S::name(&self.opts)
    }

    /// The options it was started with (with the port actually used).
    pub fn opts(&self) -> S::Opts {
        S::with_port(&self.opts, self.addr.port())
    }

    /// Path of the machine-readable status page (Apache:
    /// `/server-status?auto`, nginx: `/nginx_status`).
    pub fn status_path(&self) -> &'static str {
        S::STATUS_PATH
    }

    /// `http://<addr>` + [`Self::status_path`].
    pub fn status_url(&self) -> String {
        format!("http://{}{}", self.addr, self.status_path())
    }

    /// `http://<addr>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The node's own directory (config, logs, content).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the node's error log.
    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join(S::ERROR_LOG)
    }

    /// Contents of the node's error log.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// Contents of the node's access log.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join(S::ACCESS_LOG)).unwrap_or_default()
    }

    /// Pid of the master process, while running.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.pid())
    }

    /// True while the master process runs.
    pub fn is_running(&mut self) -> bool {
        self.server.as_mut().is_some_and(|s| s.exited().is_none())
    }

    /// Stops the node (master and all children; bounded). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }

    /// Starts the node again on the same address (after [`Self::stop`], or
    /// stops it first). Panics on failure, with the error log.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!(
                "{} on {} failed to restart: {e}\n---- error log ----\n{}",
                S::describe(&self.opts),
                self.addr,
                self.error_log()
            );
        }
    }

    /// SIGSTOPs every process of the node: connections are still accepted by
    /// the kernel but never answered (a hung node). Undone by [`Self::thaw`]
    /// or by stopping the node.
    pub fn freeze(&self) {
        if let Some(s) = &self.server {
            s.signal_group("STOP");
        }
    }

    /// SIGCONTs a node frozen by [`Self::freeze`].
    pub fn thaw(&self) {
        if let Some(s) = &self.server {
            s.signal_group("CONT");
        }
    }
}

impl<S: Server> Drop for TestNode<S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let label = format!("{}-{}-{}", S::LABEL, S::name(&self.opts), self.addr.port());
            let logs: Vec<PathBuf> = S::REPORT_FILES
                .iter()
                .map(|l| self.dir.path().join(l))
                .collect();
            super::report_failed_node(&label, &self.error_log_path(), &logs);
        }
        self.stop();
    }
}

/// The clean environment nodes run in: none of Debian's `APACHE_*`
/// variables, a predictable `PATH` for CGIs, the C locale.
pub fn clean_env(cmd: &mut Command) {
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C");
}
