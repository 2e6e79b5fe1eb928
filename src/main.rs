//! The `webcluster` command line: run, check, reload, demo.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use webcluster::config::{self, Config, LogFormat};
use webcluster::control::{self, NodeCommand};
use webcluster::demo::{self, DemoOptions};
use webcluster::server::{self, RunOptions};

/// mimalloc, chosen on measurements (benches/README.md, "What each step bought"): CPU
/// per request 46 vs 50 us (small response) and 92 vs 139 us (64 KiB) against
/// glibc malloc, and the same memory per idle connection (14.5 vs 14 KiB)
/// once the visitor read buffer is off. The `system-allocator` feature
/// leaves it out, for heap profilers that see only malloc (heaptrack; see
/// benches/README.md). How it is called: `webcluster::alloc`.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: webcluster::alloc::Mimalloc = webcluster::alloc::Mimalloc;

const DEFAULT_CONFIG: &str = "conf/webcluster.toml";

#[derive(Parser)]
#[command(
    name = "webcluster",
    version,
    about = "Front proxy for clusters of web servers, balancing by the nodes' own live load"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Take over the listening sockets of a running webcluster (send it
        /// SIGQUIT right after starting this): zero-downtime binary upgrade.
        /// This process waits about 5 s on `upgrade_sock` for the sockets;
        /// the old one keeps serving 5 s more, then drains and exits.
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config file and print what it sets up (like `nginx -t`).
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Tell the running webcluster to reload its config (SIGHUP to the pid in
    /// the config's `pid_file`).
    Reload {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Wait for the running webcluster's verdict (read from its admin
        /// listener) and exit non-zero when it refused the new config.
        #[arg(short, long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// The process to signal, instead of the pid in `pid_file` (systemd:
        /// `--pid $MAINPID`).
        #[arg(long)]
        pid: Option<i32>,
    },
    /// Take a node out or put it back at run time, through the running
    /// webcluster's admin listener (with the token of `[admin] token_file`).
    Node {
        #[command(subcommand)]
        action: NodeAction,
        #[arg(short, long, default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
    },
    /// Run a demo: three demo nodes in this process, the proxy and the
    /// status page in front of them.
    Demo {
        /// Proxy listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// HTTPS listener (a self-signed certificate made at start).
        #[arg(long, default_value = "127.0.0.1:8443")]
        https: SocketAddr,
        /// Admin listener (status page, JSON, ?auto, metrics).
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin: SocketAddr,
        /// Workers per demo node.
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Milliseconds each demo page takes.
        #[arg(long, default_value_t = 20)]
        delay_ms: u64,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Every node's operator state and weight.
    List,
    /// No new requests or sessions for GROUP/NODE; in-flight ones finish.
    Drain { node: String },
    /// No request at all for GROUP/NODE (maintenance); health checks go on.
    Maint { node: String },
    /// GROUP/NODE back to normal.
    Ready { node: String },
    /// Set GROUP/NODE's weight (0 to 10000) in place of the config's, or
    /// `reset` to go back to the config's.
    Weight { node: String, weight: String },
}

/// Log to standard output: text (in colour only on a terminal, and never
/// with `NO_COLOR` set) or one JSON object per line.
fn init_logging(default_level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},pingora_core=warn,pingora_proxy=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(use_colour()).try_init(),
    };
    fn use_colour() -> bool {
        std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(config::load(path)?)
}

fn send_hup(config: &Config, pid: Option<i32>) -> anyhow::Result<i32> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if let Some(pid) = pid {
        kill(Pid::from_raw(pid), Signal::SIGHUP)
            .with_context(|| format!("cannot signal process {pid}"))?;
        return Ok(pid);
    }
    let pid_file = config.server.pid_file.as_ref().with_context(|| {
        format!(
            "{}: no `pid_file` in [server]: set one to use `webcluster reload` (or send SIGHUP yourself)",
            config.source.display()
        )
    })?;
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("cannot read the pid file {}", pid_file.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: not a pid: {:?}", pid_file.display(), text.trim()))?;
    kill(Pid::from_raw(pid), Signal::SIGHUP)
        .with_context(|| format!("cannot signal process {pid}"))?;
    Ok(pid)
}

/// The reload counters of the running webcluster, read from its admin
/// listener's `/status.json`: (successes, failures, last error).
fn reload_counters(admin: SocketAddr) -> anyhow::Result<(u64, u64, Option<String>)> {
    let (status, json) = control::request(admin, "GET", "/status.json", None)?;
    anyhow::ensure!(
        status == 200,
        "{admin}/status.json answered {status} (is this host in [admin] allow?)"
    );
    let config = &json["config"];
    let count = |k: &str| {
        config[k]
            .as_u64()
            .with_context(|| format!("{admin}/status.json has no config.{k}"))
    };
    Ok((
        count("reloads_ok")?,
        count("reloads_failed")?,
        config["last_reload_error"].as_str().map(str::to_owned),
    ))
}

/// SIGHUP, then wait for the running webcluster to apply or refuse the
/// config: an error when it refused it (or said nothing in `timeout`).
fn reload_and_wait(config: &Config, pid: Option<i32>, timeout: Duration) -> anyhow::Result<()> {
    let admin = config.admin.listen.with_context(|| {
        format!(
            "{}: --wait reads the result from the admin listener, which is disabled",
            config.source.display()
        )
    })?;
    let (ok, failed, _) = reload_counters(admin)?;
    let pid = send_hup(config, pid)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let (now_ok, now_failed, error) = reload_counters(admin)?;
        if now_failed > failed {
            anyhow::bail!(
                "webcluster (pid {pid}) refused the new config and keeps the running one: {}",
                error.unwrap_or_else(|| "no reason given".to_owned())
            );
        }
        if now_ok > ok {
            println!(
                "webcluster (pid {pid}) reloaded {}",
                config.source.display()
            );
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "webcluster (pid {pid}) got SIGHUP but did not say within {timeout:?} whether it reloaded"
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, upgrade } => load(&config).and_then(|c| {
            init_logging(&c.server.log_level, c.server.log_format);
            server::run(c, RunOptions { upgrade })
        }),
        Command::Check { config } => load(&config).map(|c| {
            print!("{}", c.summary());
            println!("{}: configuration is valid", config.display());
        }),
        Command::Reload {
            config,
            wait,
            timeout,
            pid,
        } => load(&config)
            .context("the config has an error, the running webcluster was not signalled")
            .and_then(|c| {
                if !wait {
                    let pid = send_hup(&c, pid)?;
                    println!("sent SIGHUP to webcluster (pid {pid})");
                    return Ok(());
                }
                reload_and_wait(&c, pid, Duration::from_secs(timeout))
            }),
        Command::Node { action, config } => load(&config).and_then(|c| {
            let cmd = match action {
                NodeAction::List => NodeCommand::List,
                NodeAction::Drain { node } => NodeCommand::Drain(node),
                NodeAction::Maint { node } => NodeCommand::Maint(node),
                NodeAction::Ready { node } => NodeCommand::Ready(node),
                NodeAction::Weight { node, weight } => NodeCommand::Weight(node, weight),
            };
            print!("{}", control::run(&c, &cmd)?);
            Ok(())
        }),
        Command::Demo {
            listen,
            https,
            admin,
            workers,
            delay_ms,
        } => {
            init_logging("info", LogFormat::Text);
            demo::run(DemoOptions {
                listen,
                https,
                admin,
                workers,
                delay: Duration::from_millis(delay_ms),
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webcluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}
