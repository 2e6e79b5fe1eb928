//! [`NginxNode`]: a real nginx (Debian's `/usr/sbin/nginx`) as a test web node.
//!
//! The configuration is rendered from the project's one template,
//! `docker/nginx/node.conf` (also used by the Docker demo through envsubst):
//! this module replaces its `${NODE_...}` placeholders and writes the result
//! into the node's own temp directory, which also holds the pid file, logs and
//! temp paths. nginx runs in the foreground
//! (`nginx -p <dir> -e <dir>/error.log -c <dir>/nginx.conf -g 'daemon off;'`)
//! in its own process group.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{start_node, ServerProcess};

/// Debian's nginx binary.
pub const NGINX_BIN: &str = "/usr/sbin/nginx";
/// How long a node may take to answer `GET /node` after being started.
pub const START_LIMIT: Duration = Duration::from_secs(10);
/// The `keepalive_timeout` written in the template, in seconds.
const TEMPLATE_KEEPALIVE_TIMEOUT_SECS: u32 = 5;

/// How to start an [`NginxNode`].
#[derive(Debug, Clone)]
pub struct NginxOpts {
    /// The node's name: served at `/node`, on `/` and in the
    /// `X-Webcluster-Node` response header. `[A-Za-z0-9._-]`, 1-64 chars.
    pub name: String,
    /// Addresses/CIDRs allowed to read `/nginx_status` (`allow ...;`).
    pub allow_status_from: Vec<String>,
    /// Loopback address to listen on (127.0.0.0/8 only).
    pub listen_ip: IpAddr,
    /// Fixed port, or `None` for a free ephemeral one.
    pub port: Option<u16>,
    /// `keepalive_timeout` in seconds (idle client connections, the proxy's
    /// pooled ones included, are closed after it). Default: 5, the
    /// template's own value.
    pub keepalive_timeout_secs: u32,
}

impl Default for NginxOpts {
    fn default() -> Self {
        Self {
            name: "nginx".to_string(),
            allow_status_from: vec!["127.0.0.1".to_string()],
            listen_ip: Ipv4Addr::LOCALHOST.into(),
            port: None,
            keepalive_timeout_secs: TEMPLATE_KEEPALIVE_TIMEOUT_SECS,
        }
    }
}

impl NginxOpts {
    /// A node named `name`, status readable from 127.0.0.1.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::default()
        }
    }
}

/// A running nginx; stopped (master and workers) on drop.
#[derive(Debug)]
pub struct NginxNode {
    opts: NginxOpts,
    addr: SocketAddr,
    server: Option<ServerProcess>,
    // Last: removed after the server is stopped.
    dir: tempfile::TempDir,
}

impl NginxNode {
    /// Starts a node and waits (up to 10 s) until `GET /node` answers with its
    /// name. Panics on failure, with the node's error log in the message.
    pub fn start(opts: NginxOpts) -> Self {
        match Self::try_start(opts) {
            Ok(node) => node,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`NginxNode::start`], returning the failure instead of panicking.
    pub fn try_start(opts: NginxOpts) -> Result<Self, String> {
        super::require_installed(NGINX_BIN, "nginx");
        super::check_node_name(&opts.name);
        assert!(
            !opts.allow_status_from.is_empty(),
            "allow_status_from must name at least one address"
        );
        assert!(
            opts.listen_ip.is_loopback(),
            "test nodes listen on loopback addresses only"
        );
        let dir = super::instance_dir("nginx", &opts.name);
        let mut node = Self {
            addr: SocketAddr::new(opts.listen_ip, opts.port.unwrap_or(0)),
            opts,
            server: None,
            dir,
        };
        let attempts = if node.opts.port.is_some() { 1 } else { 3 };
        let mut last_err = String::new();
        for _ in 0..attempts {
            if node.opts.port.is_none() {
                node.addr.set_port(super::free_port());
            }
            node.render_config();
            match node.launch() {
                Ok(()) => return Ok(node),
                Err(e) => {
                    let log = node.error_log();
                    last_err = format!(
                        "nginx node {:?} on {} failed to start: {e}\n---- error log ----\n{log}\n\
                         ---- stderr ----\n{}",
                        node.opts.name,
                        node.addr,
                        fs::read_to_string(node.dir.path().join("stderr.log")).unwrap_or_default(),
                    );
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        Err(last_err)
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    fn render_config(&self) {
        let template = template();
        let text = fs::read_to_string(&template)
            .unwrap_or_else(|e| panic!("read {}: {e}", template.display()));
        let acl: String = self
            .opts
            .allow_status_from
            .iter()
            .map(|a| format!("allow {a}; "))
            .collect();
        let dir = self.dir.path().to_string_lossy().into_owned();
        let values = [
            ("NODE_NAME", self.opts.name.clone()),
            ("NODE_LISTEN", self.addr.to_string()),
            ("NODE_DIR", dir),
            ("NODE_USER", super::worker_user().0.to_string()),
            ("NODE_STATUS_ACL", acl.trim_end().to_string()),
        ];
        let mut rendered = values.iter().fold(text, |t, (name, value)| {
            t.replace(&format!("${{{name}}}"), value)
        });
        let keepalive = self.opts.keepalive_timeout_secs;
        if keepalive != TEMPLATE_KEEPALIVE_TIMEOUT_SECS {
            let default = format!("keepalive_timeout {TEMPLATE_KEEPALIVE_TIMEOUT_SECS}s;");
            assert!(
                rendered.matches(&default).count() == 1,
                "{} must contain `{default}` exactly once for keepalive_timeout_secs",
                template.display()
            );
            rendered = rendered.replace(&default, &format!("keepalive_timeout {keepalive}s;"));
        }
        if let Some(pos) = rendered.find("${NODE_") {
            let rest = &rendered[pos..];
            let end = rest.find('}').map_or(rest.len(), |i| i + 1);
            panic!(
                "{} uses placeholder {} that the test harness does not know",
                template.display(),
                &rest[..end]
            );
        }
        fs::write(self.conf_path(), rendered).expect("write the nginx config");
    }

    fn command(&self) -> Command {
        let dir = self.dir.path();
        let mut cmd = Command::new(NGINX_BIN);
        cmd.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(self.conf_path())
            .args(["-g", "daemon off;"])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C");
        cmd
    }

    fn launch(&mut self) -> Result<(), String> {
        let server = start_node(
            self.command(),
            self.dir.path(),
            NGINX_BIN,
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
    pub fn opts(&self) -> NginxOpts {
        NginxOpts {
            port: Some(self.addr.port()),
            ..self.opts.clone()
        }
    }

    /// Path of the stub_status page: `/nginx_status`.
    pub fn status_path(&self) -> &'static str {
        "/nginx_status"
    }

    /// `http://<addr>/nginx_status`.
    pub fn status_url(&self) -> String {
        format!("http://{}{}", self.addr, self.status_path())
    }

    /// `http://<addr>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The node's own directory (rendered config, logs, temp paths).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the node's error log.
    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// Contents of the node's error log.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// Contents of the node's access log.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Pid of the master process, while running.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.pid())
    }

    /// True while the master process runs.
    pub fn is_running(&mut self) -> bool {
        self.server.as_mut().is_some_and(|s| s.exited().is_none())
    }

    /// Stops the node (master and workers; bounded). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }

    /// Starts the node again on the same address. Panics on failure.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!(
                "nginx node {:?} on {} failed to restart: {e}\n---- error log ----\n{}",
                self.opts.name,
                self.addr,
                self.error_log()
            );
        }
    }

    /// SIGSTOPs every process of the node (a hung node); see [`Self::thaw`].
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

impl Drop for NginxNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let label = format!("nginx-{}-{}", self.opts.name, self.addr.port());
            let logs = ["error.log", "access.log", "stderr.log", "nginx.conf"]
                .map(|l| self.dir.path().join(l));
            super::report_failed_node(&label, &self.error_log_path(), &logs);
        }
        self.stop();
    }
}

/// The config template, `docker/nginx/node.conf`.
pub fn template() -> PathBuf {
    super::repo_path("docker/nginx/node.conf")
}
