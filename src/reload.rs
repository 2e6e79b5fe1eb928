//! Config reload: on SIGHUP (or `webcluster reload`), read and validate the
//! whole file; if it is wrong keep serving with the old config and say why;
//! if it is right, swap it in (`Cluster::apply` keeps the live state of the
//! nodes that stay). Listener addresses cannot move without a restart or a
//! binary upgrade: the old ones are kept and the log says so. TLS
//! certificates and keys are read again with the file: new handshakes use
//! the new ones, open connections go on with theirs; a certificate that
//! does not load is a config error like any other, and the old ones stay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::cluster::{Cluster, ReloadDiff};
use crate::config::{
    self, AdminSettings, Buffering, Config, ConfigError, Limits, Retries, ServerSettings, Timeouts,
    TlsListener,
};
use crate::metrics::Metrics;
use crate::tls::Terminators;

pub struct Reloader {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    path: PathBuf,
    /// The TLS listeners, whose certificates a reload swaps.
    tls: Arc<Terminators>,
}

/// Keep the running value of a setting a reload cannot change; says what
/// was asked for, if it differed.
fn keep<T: PartialEq + Clone + std::fmt::Debug>(
    kept: &mut Vec<String>,
    what: &str,
    old: &T,
    new: &mut T,
) {
    if new != old {
        kept.push(format!("{what} {old:?} -> {new:?}"));
        *new = old.clone();
    }
}

/// Settings a reload cannot change in a running process: listeners need a
/// restart or binary upgrade; pingora's threads and shutdown timers, the
/// log filter and format, the access log, the pid file and upgrade socket are all set
/// up once, at start.
///
/// Every field of the config is named below, none left to `..`: a new
/// setting does not compile until it is sorted here, either kept (`keep`,
/// when it is only read at start) or reloadable (`_`, when it is read from
/// the live config, `Cluster::state()`, every time it is used).
fn keep_fixed_settings(old: &Config, new: &mut Config) -> Vec<String> {
    let mut kept = Vec::new();
    let Config {
        source: _,
        hash: _,
        server,
        admin,
        access_log,
        timeouts,
        retries,
        limits,
        buffering,
        // Read by the discovery service on each round: reloadable.
        discovery: _,
        // The status guard, groups (nodes keep their live state, groups
        // their queue) and router are rebuilt by `Cluster::apply`: what a
        // reload is for. Reloadable with them: every group key, the queue's
        // `queue_timeout` and `max_queue` and the nodes' `max_conns`
        // included (a request already waiting keeps the rules it came
        // with, as every request in flight does).
        protected_paths: _,
        groups: _,
        routes: _,
        default_group: _,
        tls,
    } = new;

    let ServerSettings {
        listen,
        threads,
        cpu_affinity,
        grace_period,
        log_level,
        log_format,
        pid_file,
        upgrade_sock,
        // Read per request and per new connection: reloadable.
        trusted_proxies: _,
        proxy_protocol_from: _,
        h2c: _,
        // Written on each operator change, from the live config; read back
        // only at start.
        state_file: _,
    } = server;
    let o = &old.server;
    keep(&mut kept, "proxy listeners", &o.listen, listen);
    keep(&mut kept, "threads", &o.threads, threads);
    keep(&mut kept, "cpu_affinity", &o.cpu_affinity, cpu_affinity);
    keep(&mut kept, "grace_period", &o.grace_period, grace_period);
    keep(&mut kept, "log_level", &o.log_level, log_level);
    keep(&mut kept, "log_format", &o.log_format, log_format);
    keep(&mut kept, "pid_file", &o.pid_file, pid_file);
    keep(&mut kept, "upgrade_sock", &o.upgrade_sock, upgrade_sock);

    let AdminSettings {
        listen: admin_listen,
        allow: _,
        // Read on each node control request: reloadable.
        token_file: _,
    } = admin;
    keep(&mut kept, "admin listener", &old.admin.listen, admin_listen);

    keep(&mut kept, "access_log", &old.access_log, access_log);

    // Read per request (or per connection, per pool sweep) from the live
    // config: all reloadable.
    let Timeouts {
        connect: _,
        read: _,
        write: _,
        idle: _,
        client_read: _,
        client_write: _,
        client_keepalive: _,
    } = timeouts;
    let Retries {
        tries: _,
        idempotent_on_error: _,
    } = retries;
    let Limits {
        max_request_head: _,
        max_headers: _,
        max_request_body: _,
        max_response_head: _,
        // Read per new HTTP/2 connection.
        http2_max_concurrent_streams: _,
    } = limits;
    let Buffering {
        requests: _,
        responses: _,
        memory: _,
        max_temp_file: _,
        temp_dir: _,
    } = buffering;

    // TLS listeners: their addresses are bound at start like the plain
    // ones (all TLS settings stay if they move); certificates and the rest
    // are read again and used by new handshakes (`tls::Terminators::update`).
    let listens = |t: &[TlsListener]| t.iter().map(|l| l.listen.clone()).collect::<Vec<_>>();
    if listens(tls) != listens(&old.tls) {
        kept.push(format!(
            "TLS listeners {:?} -> {:?} (with their certificates and settings)",
            listens(&old.tls),
            listens(tls)
        ));
        tls.clone_from(&old.tls);
    }
    for listener in tls.iter() {
        let TlsListener {
            listen: _,
            certificates: _,
            min_version: _,
            http2: _,
            session_tickets: _,
            session_cache: _,
        } = listener;
    }
    kept
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Reloader {
    pub fn new(cluster: Arc<Cluster>, metrics: Arc<Metrics>, path: PathBuf) -> Reloader {
        Reloader {
            cluster,
            metrics,
            path,
            tls: Arc::default(),
        }
    }

    /// Swap the certificates and settings of these TLS listeners too.
    pub fn with_tls(mut self, tls: Arc<Terminators>) -> Reloader {
        self.tls = tls;
        self
    }

    /// Whether the file's bytes differ from the running config's (a file
    /// that cannot be read counts as unchanged: nothing to catch up with).
    fn file_changed(&self) -> bool {
        use sha2::{Digest, Sha256};
        let Ok(bytes) = std::fs::read(&self.path) else {
            return false;
        };
        let hash: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        hash != self.cluster.state().config.hash
    }

    /// Reload once; the outcome is logged and counted either way.
    pub fn reload(&self) -> Result<ReloadDiff, ConfigError> {
        match config::load(&self.path) {
            Err(e) => {
                // Counted before it is logged: whoever sees the log line sees
                // the counts too.
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                self.cluster.reload_failed(e.to_string());
                tracing::error!("reload refused, the running config stays in force: {e}");
                Err(e)
            }
            Ok(mut new) => {
                let old = self.cluster.state();
                for what in keep_fixed_settings(&old.config, &mut new) {
                    tracing::warn!(
                        "reload: {what} cannot change without a restart or binary upgrade; keeping the running value"
                    );
                }
                let hash = new.hash.clone();
                self.tls.update(&new);
                crate::tls::expiry::warn_expiring(&new, unix_now());
                let diff = self.cluster.apply(new);
                self.metrics.reloads.with_label_values(&["success"]).inc();
                self.metrics.last_reload.set(unix_now());
                tracing::info!(
                    "config reloaded from {} (sha256 {}): {diff}",
                    self.path.display(),
                    hash.get(..12).unwrap_or(&hash)
                );
                Ok(diff)
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP, reload is unavailable: {e}");
                return;
            }
        };
        // SIGHUP was ignored until now (see `server::run`): catch up with a
        // reload asked for while starting.
        if self.file_changed() {
            tracing::info!("{} changed while starting, reloading", self.path.display());
            let _ = self.reload();
        }
        loop {
            tokio::select! {
                Some(()) = hup.recv() => {
                    tracing::info!("SIGHUP received, reloading {}", self.path.display());
                    let _ = self.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "{extra}[[group]]\nname = \"web\"\n[[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n"
        );
        config::parse(&text, Path::new("<test>")).expect("valid")
    }

    #[test]
    fn fixed_settings_are_kept_and_said_others_change() {
        let old = config("[server]\nlisten = [\"127.0.0.1:8080\"]\nthreads = 1\n");
        let mut new = config(
            "[server]\nlisten = [\"127.0.0.1:9090\"]\nthreads = 2\ncpu_affinity = \"auto\"\n\
             [timeouts]\nconnect = \"7s\"\n[access_log]\ntarget = \"stdout\"\n",
        );
        let kept = keep_fixed_settings(&old, &mut new);
        assert_eq!(new.server, old.server);
        assert_eq!(new.access_log, old.access_log);
        assert_eq!(new.timeouts.connect, std::time::Duration::from_secs(7));
        assert_eq!(
            kept,
            [
                "proxy listeners [127.0.0.1:8080] -> [127.0.0.1:9090]",
                "threads 1 -> 2",
                "cpu_affinity Off -> Auto",
                "access_log Off -> Stdout",
            ]
        );
        let mut same = old.clone();
        assert!(keep_fixed_settings(&old, &mut same).is_empty());
    }
}
