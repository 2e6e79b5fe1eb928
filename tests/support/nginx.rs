//! [`NginxNode`]: a real nginx (Debian's `/usr/sbin/nginx`) as a test web node.
//!
//! The configuration is rendered from the project's one template,
//! `docker/nginx/node.conf` (also used by the Docker demo through envsubst):
//! this module replaces its `${NODE_...}` placeholders and writes the result
//! into the node's own temp directory, which also holds the pid file, logs and
//! temp paths. nginx runs in the foreground
//! (`nginx -p <dir> -e <dir>/error.log -c <dir>/nginx.conf -g 'daemon off;'`)
//! in its own process group. What every test node shares (start, stop,
//! logs) is [`TestNode`], in `node.rs`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::node::{clean_env, Server, TestNode};

/// Debian's nginx binary.
pub const NGINX_BIN: &str = "/usr/sbin/nginx";
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
pub type NginxNode = TestNode<Nginx>;

/// nginx as a [`Server`] of [`TestNode`].
#[derive(Debug)]
pub enum Nginx {}

impl Server for Nginx {
    type Opts = NginxOpts;
    const BIN: &'static str = NGINX_BIN;
    const PACKAGE: &'static str = "nginx";
    const LABEL: &'static str = "nginx";
    const ERROR_LOG: &'static str = "error.log";
    const ACCESS_LOG: &'static str = "access.log";
    const REPORT_FILES: &'static [&'static str] =
        &["error.log", "access.log", "stderr.log", "nginx.conf"];
    const STATUS_PATH: &'static str = "/nginx_status";

    fn name(o: &NginxOpts) -> &str {
        &o.name
    }

    fn listen_ip(o: &NginxOpts) -> IpAddr {
        o.listen_ip
    }

    fn port(o: &NginxOpts) -> Option<u16> {
        o.port
    }

    fn allow_status_from(o: &NginxOpts) -> &[String] {
        &o.allow_status_from
    }

    fn with_port(o: &NginxOpts, port: u16) -> NginxOpts {
        NginxOpts {
            port: Some(port),
            ..o.clone()
        }
    }

    fn describe(o: &NginxOpts) -> String {
        format!("nginx node {:?}", o.name)
    }

    /// Renders `nginx.conf` for this address.
    fn configure(dir: &Path, o: &NginxOpts, addr: SocketAddr) {
        render_config(dir, o, addr);
    }

    fn command(dir: &Path, _o: &NginxOpts, _addr: SocketAddr) -> Command {
        let mut cmd = Command::new(NGINX_BIN);
        cmd.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"]);
        clean_env(&mut cmd);
        cmd
    }

    fn bind_failed(error_log: &str) -> bool {
        error_log.contains("Address already in use")
    }
}

/// Writes `<dir>/nginx.conf`: the template with its `${NODE_...}`
/// placeholders filled in (and `keepalive_timeout` changed if asked).
fn render_config(dir: &Path, opts: &NginxOpts, addr: SocketAddr) {
    let template = template();
    let text = fs::read_to_string(&template)
        .unwrap_or_else(|e| panic!("read {}: {e}", template.display()));
    let acl: String = opts
        .allow_status_from
        .iter()
        .map(|a| format!("allow {a}; "))
        .collect();
    let values = [
        ("NODE_NAME", opts.name.clone()),
        ("NODE_LISTEN", addr.to_string()),
        ("NODE_DIR", dir.to_string_lossy().into_owned()),
        ("NODE_USER", super::worker_user().0.to_string()),
        ("NODE_STATUS_ACL", acl.trim_end().to_string()),
    ];
    let mut rendered = values.iter().fold(text, |t, (name, value)| {
        t.replace(&format!("${{{name}}}"), value)
    });
    let keepalive = opts.keepalive_timeout_secs;
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
    fs::write(dir.join("nginx.conf"), rendered).expect("write the nginx config");
}

/// The config template, `docker/nginx/node.conf`.
pub fn template() -> PathBuf {
    super::repo_path("docker/nginx/node.conf")
}
