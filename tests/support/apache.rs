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
//! What every test node shares (start, stop, logs) is [`TestNode`], in
//! `node.rs`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::node::{clean_env, Server, TestNode};

/// Debian's Apache binary.
pub const APACHE_BIN: &str = "/usr/sbin/apache2";
/// Debian's Apache module directory.
pub const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

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
pub type ApacheNode = TestNode<Apache>;

/// Apache httpd as a [`Server`] of [`TestNode`].
#[derive(Debug)]
pub enum Apache {}

impl Server for Apache {
    type Opts = ApacheOpts;
    const BIN: &'static str = APACHE_BIN;
    const PACKAGE: &'static str = "apache2";
    const LABEL: &'static str = "apache";
    const ERROR_LOG: &'static str = "logs/error.log";
    const ACCESS_LOG: &'static str = "logs/access.log";
    const REPORT_FILES: &'static [&'static str] =
        &["logs/error.log", "logs/access.log", "stderr.log"];
    const STATUS_PATH: &'static str = "/server-status?auto";

    fn name(o: &ApacheOpts) -> &str {
        &o.name
    }

    fn listen_ip(o: &ApacheOpts) -> IpAddr {
        o.listen_ip
    }

    fn port(o: &ApacheOpts) -> Option<u16> {
        o.port
    }

    fn allow_status_from(o: &ApacheOpts) -> &[String] {
        &o.allow_status_from
    }

    fn with_port(o: &ApacheOpts, port: u16) -> ApacheOpts {
        ApacheOpts {
            port: Some(port),
            ..o.clone()
        }
    }

    fn describe(o: &ApacheOpts) -> String {
        format!("Apache node {:?} ({} MPM)", o.name, o.mpm.as_str())
    }

    fn check(o: &ApacheOpts) {
        assert!(
            (1..=256).contains(&o.max_workers),
            "max_workers must be 1..=256"
        );
    }

    fn prepare(dir: &Path, o: &ApacheOpts) {
        prepare_dir(dir, &o.name);
        write_extra_cgis(dir, &o.extra_cgis);
    }

    fn command(dir: &Path, o: &ApacheOpts, addr: SocketAddr) -> Command {
        let (user, group) = super::worker_user();
        let defines = [
            ("NODE_NAME", o.name.clone()),
            ("NODE_LISTEN", addr.to_string()),
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
        clean_env(&mut cmd);
        cmd
    }

    fn bind_failed(error_log: &str) -> bool {
        error_log.contains("Address already in use") || error_log.contains("could not bind")
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
