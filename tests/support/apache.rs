//! [`ApacheNode`]: a real Apache httpd (Debian's `/usr/sbin/apache2`) as a
//! test web node.
//!
//! The configuration is the project's one template, `docker/apache/node.conf`
//! (also used by the Docker demo); this module only passes per-instance values
//! as `-C "Define NODE_... value"` directives and copies `docker/apache/htdocs`
//! (with `@NODE_NAME@` replaced) and `docker/apache/cgi-bin` into the node's
//! own temp directory, which also holds its pid file, scoreboard, mutexes,
//! cgid socket and logs. The binary runs in the foreground
//! (`apache2 -d <dir> -f node.conf -DFOREGROUND ...`) in its own process group.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{start_node, ServerProcess};

/// Debian's Apache binary.
pub const APACHE_BIN: &str = "/usr/sbin/apache2";
/// Debian's Apache module directory.
pub const APACHE_MODULES: &str = "/usr/lib/apache2/modules";
/// How long a node may take to answer `GET /node` after being started.
pub const START_LIMIT: Duration = Duration::from_secs(10);

/// The multi-processing module a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mpm {
    /// One process per worker (mod_cgi for CGIs).
    Prefork,
    /// One process, `max_workers` threads (mod_cgid for CGIs).
    Event,
}

impl Mpm {
    /// The name used in module file names: `prefork` / `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mpm::Prefork => "prefork",
            Mpm::Event => "event",
        }
    }
}

/// How to start an [`ApacheNode`].
#[derive(Debug, Clone)]
pub struct ApacheOpts {
    /// The node's name: served at `/node`, on `/`, by the CGIs and in the
    /// `X-Webcluster-Node` response header. `[A-Za-z0-9._-]`, 1-64 chars.
    pub name: String,
    /// Prefork or event.
    pub mpm: Mpm,
    /// MaxRequestWorkers; the scoreboard has exactly this many slots.
    pub max_workers: u32,
    /// Addresses/CIDRs allowed to read `/server-status` (`Require ip ...`).
    pub allow_status_from: Vec<String>,
    /// KeepAliveTimeout in seconds.
    pub keepalive_timeout_secs: u32,
    /// Loopback address to listen on (127.0.0.0/8 only).
    pub listen_ip: IpAddr,
    /// Fixed port, or `None` for a free ephemeral one.
    pub port: Option<u16>,
    /// Extra CGI scripts besides the template's, as (name, script text):
    /// each is written to the node's `cgi-bin/<name>` (mode 0755) and served
    /// at `/<name>` by a `ScriptAliasMatch` given on the command line after
    /// the template (`-c`). `[A-Za-z0-9_-]` names. Default: none.
    pub extra_cgis: Vec<(String, String)>,
    /// Extra directives given on the command line after the template
    /// (`-c`), e.g. `LimitRequestBody 0`. Default: none.
    pub extra_directives: Vec<String>,
}

impl Default for ApacheOpts {
    fn default() -> Self {
        Self {
            name: "apache".to_string(),
            mpm: Mpm::Prefork,
            max_workers: 8,
            allow_status_from: vec!["127.0.0.1".to_string()],
            keepalive_timeout_secs: 5,
            listen_ip: Ipv4Addr::LOCALHOST.into(),
            port: None,
            extra_cgis: Vec::new(),
            extra_directives: Vec::new(),
        }
    }
}

impl ApacheOpts {
    /// A prefork node named `name` with `max_workers` workers.
    pub fn prefork(name: &str, max_workers: u32) -> Self {
        Self {
            name: name.to_string(),
            mpm: Mpm::Prefork,
            max_workers,
            ..Self::default()
        }
    }

    /// An event node named `name` with `max_workers` threads.
    pub fn event(name: &str, max_workers: u32) -> Self {
        Self {
            name: name.to_string(),
            mpm: Mpm::Event,
            max_workers,
            ..Self::default()
        }
    }
}

/// A running Apache httpd; stopped (with all its children) on drop.
#[derive(Debug)]
pub struct ApacheNode {
    opts: ApacheOpts,
    addr: SocketAddr,
    server: Option<ServerProcess>,
    // Last: removed after the server is stopped.
    dir: tempfile::TempDir,
}

impl ApacheNode {
    /// Starts a node and waits (up to 10 s) until `GET /node` answers with its
    /// name. Panics on failure, with the node's error log in the message.
    pub fn start(opts: ApacheOpts) -> Self {
        match Self::try_start(opts) {
            Ok(node) => node,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`ApacheNode::start`], returning the failure (with the error log)
    /// instead of panicking.
    pub fn try_start(opts: ApacheOpts) -> Result<Self, String> {
        super::require_installed(APACHE_BIN, "apache2");
        super::check_node_name(&opts.name);
        assert!(
            (1..=256).contains(&opts.max_workers),
            "max_workers must be 1..=256"
        );
        assert!(
            !opts.allow_status_from.is_empty(),
            "allow_status_from must name at least one address"
        );
        assert!(
            opts.listen_ip.is_loopback(),
            "test nodes listen on loopback addresses only"
        );
        let dir = super::instance_dir("apache", &opts.name);
        prepare_dir(dir.path(), &opts.name);
        write_extra_cgis(dir.path(), &opts.extra_cgis);
        let mut node = Self {
            addr: SocketAddr::new(opts.listen_ip, opts.port.unwrap_or(0)),
            opts,
            server: None,
            dir,
        };
        // An ephemeral port can be taken between free_port() and bind():
        // retry such bind failures with another port.
        let attempts = if node.opts.port.is_some() { 1 } else { 3 };
        let mut last_err = String::new();
        for _ in 0..attempts {
            if node.opts.port.is_none() {
                node.addr.set_port(super::free_port());
            }
            match node.launch() {
                Ok(()) => return Ok(node),
                Err(e) => {
                    let log = node.error_log();
                    last_err = format!(
                        "Apache node {:?} ({} MPM) on {} failed to start: {e}\n\
                         command: {}\n---- error log ----\n{log}\n---- stderr ----\n{}",
                        node.opts.name,
                        node.opts.mpm.as_str(),
                        node.addr,
                        node.command_line(),
                        fs::read_to_string(node.dir.path().join("stderr.log")).unwrap_or_default(),
                    );
                    let bind_failed =
                        log.contains("Address already in use") || log.contains("could not bind");
                    if !bind_failed {
                        break;
                    }
                }
            }
        }
        Err(last_err)
    }

    fn command(&self) -> Command {
        let (user, group) = super::worker_user();
        let dir = self.dir.path();
        let o = &self.opts;
        let defines = [
            ("NODE_NAME", o.name.clone()),
            ("NODE_LISTEN", self.addr.to_string()),
            ("NODE_MPM", o.mpm.as_str().to_string()),
            ("NODE_MAX_WORKERS", o.max_workers.to_string()),
            ("NODE_MAX_SPARE_THREADS", (o.max_workers + 1).to_string()),
            (
                "NODE_STATUS_ALLOW",
                format!("\"{}\"", o.allow_status_from.join(" ")),
            ),
            (
                "NODE_KEEPALIVE_TIMEOUT",
                o.keepalive_timeout_secs.to_string(),
            ),
            ("NODE_MODULES", APACHE_MODULES.to_string()),
            ("NODE_RUN_DIR", path_str(&dir.join("run"))),
            ("NODE_LOG_DIR", path_str(&dir.join("logs"))),
            ("NODE_HTDOCS", path_str(&dir.join("htdocs"))),
            ("NODE_CGI_DIR", path_str(&dir.join("cgi-bin"))),
            ("NODE_USER", user.to_string()),
            ("NODE_GROUP", group.to_string()),
        ];
        let mut cmd = Command::new(APACHE_BIN);
        cmd.arg("-d")
            .arg(dir)
            .arg("-f")
            .arg(template())
            .arg("-DFOREGROUND");
        for (name, value) in defines {
            cmd.arg("-C").arg(format!("Define {name} {value}"));
        }
        for (name, _) in &o.extra_cgis {
            let script = path_str(&dir.join("cgi-bin").join(name));
            cmd.arg("-c")
                .arg(format!("ScriptAliasMatch \"^/{name}$\" \"{script}\""));
        }
        for directive in &o.extra_directives {
            cmd.arg("-c").arg(directive);
        }
        // A clean environment: none of Debian's APACHE_* variables are needed,
        // and CGIs see a predictable PATH.
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C");
        cmd
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
            APACHE_BIN,
            self.addr,
            &self.opts.name,
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
        &self.opts.name
    }

    /// The options it was started with (with the port actually used).
    pub fn opts(&self) -> ApacheOpts {
        ApacheOpts {
            port: Some(self.addr.port()),
            ..self.opts.clone()
        }
    }

    /// Path of the status page in machine-readable form: `/server-status?auto`.
    pub fn status_path(&self) -> &'static str {
        "/server-status?auto"
    }

    /// `http://<addr>/server-status?auto`.
    pub fn status_url(&self) -> String {
        format!("http://{}{}", self.addr, self.status_path())
    }

    /// `http://<addr>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The node's own directory (config values, logs, htdocs, cgi-bin).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the node's error log.
    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("logs/error.log")
    }

    /// Contents of the node's error log.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// Contents of the node's access log.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default()
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

    /// Starts the node again on the same address (after [`ApacheNode::stop`],
    /// or stops it first). Panics on failure, with the error log.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!(
                "Apache node {:?} on {} failed to restart: {e}\n---- error log ----\n{}",
                self.opts.name,
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

impl Drop for ApacheNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let label = format!("apache-{}-{}", self.opts.name, self.addr.port());
            let logs = ["logs/error.log", "logs/access.log", "stderr.log"]
                .map(|l| self.dir.path().join(l));
            super::report_failed_node(&label, &self.error_log_path(), &logs);
        }
        self.stop();
    }
}

/// The config template, `docker/apache/node.conf`.
pub fn template() -> PathBuf {
    super::repo_path("docker/apache/node.conf")
}

fn path_str(p: &Path) -> String {
    let s = p.to_string_lossy().into_owned();
    assert!(
        !s.contains([' ', '"', '\'']),
        "instance path {s:?} must not contain spaces or quotes"
    );
    s
}

/// Lays out `<dir>/{run,logs,htdocs,cgi-bin}`: htdocs rendered from
/// `docker/apache/htdocs` (`@NODE_NAME@` -> name), CGIs copied (mode 0755).
fn prepare_dir(dir: &Path, name: &str) {
    let src = super::repo_path("docker/apache");
    for sub in ["run", "logs", "htdocs", "cgi-bin"] {
        let d = dir.join(sub);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        super::set_mode(&d, 0o755);
    }
    for (sub, mode, render) in [("htdocs", 0o644, true), ("cgi-bin", 0o755, false)] {
        let from = src.join(sub);
        let entries =
            fs::read_dir(&from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        for entry in entries {
            let entry = entry.expect("read a template directory entry");
            let target = dir.join(sub).join(entry.file_name());
            let bytes = fs::read(entry.path())
                .unwrap_or_else(|e| panic!("read {}: {e}", entry.path().display()));
            let bytes = if render {
                String::from_utf8_lossy(&bytes)
                    .replace("@NODE_NAME@", name)
                    .into_bytes()
            } else {
                bytes
            };
            fs::write(&target, bytes).unwrap_or_else(|e| panic!("write {}: {e}", target.display()));
            super::set_mode(&target, mode);
        }
    }
}

/// Writes [`ApacheOpts::extra_cgis`] into `<dir>/cgi-bin` (mode 0755).
fn write_extra_cgis(dir: &Path, cgis: &[(String, String)]) {
    for (name, script) in cgis {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')),
            "extra CGI name {name:?} must be [A-Za-z0-9_-]+"
        );
        let target = dir.join("cgi-bin").join(name);
        fs::write(&target, script).unwrap_or_else(|e| panic!("write {}: {e}", target.display()));
        super::set_mode(&target, 0o755);
    }
}
