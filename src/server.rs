//! Builds the pingora server from a `Config` and runs it until shutdown.
//!
//! Services: the proxy on each listener, the admin listener, the status
//! scraper, the DNS discovery of nodes and the SIGHUP reloader. pingora's
//! own config file and command line are kept out of the user's way: its
//! `ServerConf` is built here.
//! SIGTERM stops accepting, lets in-flight requests finish and exits as
//! soon as they are done, or at the configured grace period at the latest
//! (pingora alone would sleep the whole grace period).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::access_log::AccessLog;
use crate::admin::AdminApp;
use crate::cluster::Cluster;
use crate::config::{AccessLog as AccessLogTarget, Config};
use crate::listener::Listening;
use crate::metrics::Metrics;
use crate::proxy::pool::{Pool, Sweeper};
use crate::proxy::{ActiveRequests, Proxy};
use crate::reload::{unix_now, Reloader};
use crate::status::scraper::Scraper;
use crate::tls::Terminators;

/// How the process was started.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running old process
    /// (pingora's graceful binary upgrade).
    pub upgrade: bool,
}

/// Everything the services share; handy for tests and the demo.
pub struct Shared {
    pub cluster: Arc<Cluster>,
    pub metrics: Arc<Metrics>,
    pub active: Arc<ActiveRequests>,
}

fn check_bind(config: &Config) -> anyhow::Result<()> {
    let admin = config.admin.listen.iter();
    let tls = config.tls.iter().flat_map(|t| t.listen.iter());
    for addr in config.server.listen.iter().chain(admin).chain(tls) {
        TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    }
    Ok(())
}

/// Build the pingora server with every service added.
pub fn build(config: Config, opts: &RunOptions) -> anyhow::Result<(Server, Shared)> {
    if !opts.upgrade {
        check_bind(&config)?;
    }
    let access_log = match &config.access_log {
        AccessLogTarget::Off => None,
        AccessLogTarget::Stdout => Some(AccessLog::stdout()),
        AccessLogTarget::File(p) => Some(
            AccessLog::file(p)
                .with_context(|| format!("cannot open the access log {}", p.display()))?,
        ),
    };
    let mut conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        daemon: false,
        ..ServerConf::default()
    };
    // One single-threaded runtime per worker thread, each connection staying
    // on the thread that accepted it (no work stealing): 50 vs 54 us of CPU
    // per request measured here (benches/README.md, "What each step bought").
    conf.work_stealing = false;
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    let source = config.source.clone();
    let listen = config.server.listen.clone();
    let threads = config.server.threads;
    let cpu_affinity = config.server.cpu_affinity.clone();
    let tls =
        Arc::new(Terminators::new(&config).context("cannot set up TLS for the TLS listeners")?);
    let tls_listen: Vec<_> = config.tls.iter().flat_map(|t| t.listen.clone()).collect();
    crate::tls::expiry::warn_expiring(&config, unix_now());
    let admin_listen = config.admin.listen;
    let cluster = Arc::new(Cluster::new(config));
    cluster.restore_controls();
    let metrics = Arc::new(Metrics::new());
    metrics.last_reload.set(unix_now());
    let active = Arc::new(ActiveRequests::default());

    let pool = Arc::new(Pool::default());
    // The visitor listeners: webcluster's own accept loop (each connection
    // on the least busy worker thread, registered with that thread's
    // reactor, with a small stream type); see `listener`. No buffers below
    // the proxy's own (`proxy::http1`).
    let proxy = Listening::new(
        "webcluster proxy",
        Proxy::new(
            Arc::clone(&cluster),
            Arc::clone(&metrics),
            access_log,
            Arc::clone(&active),
            Arc::clone(&pool),
        )
        .with_tls(Arc::clone(&tls)),
        listen.iter().map(|a| a.to_string()).collect(),
        // TLS listeners are plain TCP ones to the accept loop: the proxy
        // runs the handshake itself (`crate::tls`), on the same workers.
        tls_listen.iter().map(|a| a.to_string()).collect(),
        threads,
        cpu_affinity,
    );
    server.add_service(proxy);

    if let Some(addr) = admin_listen {
        let mut admin = Service::new(
            "webcluster admin".to_string(),
            HttpServer::new_app(AdminApp::new(Arc::clone(&cluster), Arc::clone(&metrics))),
        );
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    let timeouts_of = Arc::clone(&cluster);
    let limits_of = Arc::clone(&cluster);
    server.add_service(background_service(
        "upstream pool sweeper",
        Sweeper::new(
            Arc::clone(&pool),
            move || timeouts_of.state().config.timeouts.idle,
            move || limits_of.idle_over_limit(std::time::Instant::now()),
        ),
    ));
    server.add_service(background_service(
        "status scraper",
        Scraper::new(Arc::clone(&cluster), Arc::clone(&pool)),
    ));
    server.add_service(background_service(
        "DNS discovery",
        crate::discovery::service::DnsService::new(Arc::clone(&cluster), Arc::clone(&metrics)),
    ));
    server.add_service(background_service(
        "config reload",
        Reloader::new(Arc::clone(&cluster), Arc::clone(&metrics), source).with_tls(tls),
    ));
    server.add_service(background_service(
        "certificate expiry watch",
        crate::tls::expiry::ExpiryWatch::new(Arc::clone(&cluster)),
    ));
    Ok((
        server,
        Shared {
            cluster,
            metrics,
            active,
        },
    ))
}

/// Build and run until shutdown. Blocks.
pub fn run(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    if config.server.listen.is_empty() {
        bail!("no proxy listener configured");
    }
    let pid_file = config.server.pid_file.clone();
    let grace = config.server.grace_period;
    no_transparent_huge_pages();
    open_files();
    ignore_sighup_until_the_reloader_listens();
    let (server, shared) = build(config, &opts)?;
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pid file {}", p.display()))?;
    }
    exit_when_drained(
        &server,
        Arc::clone(&shared.active),
        Arc::clone(&shared.cluster),
        grace,
        pid_file.clone(),
    );
    tracing::info!("webcluster {} started", env!("CARGO_PKG_VERSION"));
    server.run(RunArgs::default());
    remove_pid_file(pid_file.as_deref());
    Ok(())
}

/// Raises the open-files limit and grows the descriptor table before the
/// worker threads start ([`crate::descriptors`]). Failure (a seccomp
/// profile, no `/dev/null`) only costs the stalls it avoids.
fn open_files() {
    match crate::descriptors::set_up() {
        Ok(d) if d.limit != d.limit_before => tracing::info!(
            "open files: limit raised from {} to {} (the hard limit), descriptor table sized for {}",
            d.limit_before,
            d.limit,
            d.reserved
        ),
        Ok(d) => tracing::info!(
            "open files: limit {}, descriptor table sized for {}",
            d.limit,
            d.reserved
        ),
        Err(e) => tracing::warn!(error = %e, "cannot set up the open-files limit and descriptor table"),
    }
}

/// Turns transparent huge pages off for this process (`prctl
/// PR_SET_THP_DISABLE`), as Redis and the databases advise for servers
/// that answer in milliseconds. mimalloc asks for huge pages on the memory
/// it maps (`MADV_HUGEPAGE`), and the first write to each 2 MiB of it
/// faults in and zeroes a whole huge page while the event loop waits: on a
/// virtual machine whose host backs guest memory on first touch, 20-46 ms
/// per page (`benches/README.md`, "Huge pages stalled the event loop"), so
/// every node of a group went idle for tens of milliseconds whenever a
/// growing request queue took fresh memory. With 4 KiB pages the same
/// memory comes in small steps. Failure (an old kernel) only costs that.
fn no_transparent_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off");
    }
}

/// SIGHUP's default action ends the process, and `webcluster reload` (or
/// systemd's `ExecReload`) may send it as soon as the pid file exists, before
/// the reloader service has installed its handler: ignore it until then (the
/// reloader's handler replaces this, and it catches up with a file changed
/// meanwhile).
fn ignore_sighup_until_the_reloader_listens() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN runs no code in the signal context; nothing else in
    // the process has a SIGHUP handler yet.
    if let Err(e) = unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) } {
        tracing::warn!("cannot ignore SIGHUP while starting: {e}");
    }
}

fn remove_pid_file(p: Option<&Path>) {
    if let Some(p) = p {
        // Only our own pid: a new process after a binary upgrade owns it now.
        let ours =
            std::fs::read_to_string(p).is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// pingora sleeps the whole grace period after SIGTERM/SIGQUIT, drained or
/// not. Watch its phases instead and exit once no request is in flight.
fn exit_when_drained(
    server: &Server,
    active: Arc<ActiveRequests>,
    cluster: Arc<Cluster>,
    grace: Duration,
    pid_file: Option<PathBuf>,
) {
    let mut phases = server.watch_execution_phase();
    let spawned = std::thread::Builder::new()
        .name("drain-watch".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    let deadline = Instant::now() + grace;
                    let mut idle_polls = 0;
                    while Instant::now() < deadline && idle_polls < 3 {
                        idle_polls = if active.get() == 0 { idle_polls + 1 } else { 0 };
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    tracing::info!(
                        "graceful shutdown: {} request(s) still in flight, exiting",
                        active.get()
                    );
                    remove_pid_file(pid_file.as_deref());
                    std::process::exit(0);
                }
                // `/ready` says 503 from the first sign of a stop on.
                Ok(
                    ExecutionPhase::GracefulTerminate
                    | ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::ShutdownStarted,
                ) => cluster.set_stopping(),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch the shutdown, it will take the whole grace period: {e}");
    }
}
