//! Open-loop HTTP load generator for `benches/load/run.sh` (issue #6).
//!
//! Visitors arrive at a fixed rate whatever the latency: visitor `i` is due
//! at `t0 + i / rate` (or at Poisson-distributed times with `--poisson`),
//! and each opens its own new TCP connection (as a browser on a first
//! visit), sends one `GET` with `Connection: close`, reads the whole
//! response and closes. There is no connection pool, so a slow or hung
//! request never holds back the next visitor (a closed-loop tool such as
//! plain wrk would wait, and hide it).
//!
//! Latency is measured from the visitor's *intended* arrival time, not from
//! when the generator got round to it (coordinated-omission correction); the
//! generator's own lateness is reported apart (`send_lag_ms`). Every visit
//! has a deadline of `--timeout` seconds after its intended time; after the
//! last arrival the generator waits for every visit still in flight (each
//! at most until its deadline), so nothing in flight is silently dropped.
//!
//! Arrivals are timed by a thread of their own that sleeps until each one is
//! due and hands the visit to a single-threaded tokio runtime; the tokio
//! timer (1 ms ticks) only enforces the deadlines. This replaced a Python
//! asyncio generator whose own lateness reached 1.4–4.1 ms at p99 on the
//! 2-core bench machine, which went straight into the measured latencies.
//!
//! Output: one JSON object (`--out`, or stdout), see `summary`.

mod response;
mod summary;
mod visit;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};

use visit::{Record, Target};

/// Open-loop HTTP load generator: visitors arrive at a fixed rate whatever
/// the latency, each on a new connection.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// http://HOST:PORT/PATH?QUERY every visitor asks for.
    #[arg(long)]
    url: String,
    /// Arrivals per second.
    #[arg(long)]
    rate: f64,
    /// Seconds of arrivals.
    #[arg(long)]
    duration: f64,
    /// Per-visit deadline in seconds, from its intended arrival time.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Poisson arrivals instead of evenly spaced ones.
    #[arg(long)]
    poisson: bool,
    /// Seed of the Poisson arrivals.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Response header that names the node that answered (else the first
    /// word after "node " in the body).
    #[arg(long, default_value = "X-Node")]
    node_header: String,
    /// Where the JSON goes (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The address to connect to and the request bytes every visitor sends.
fn target(args: &Args) -> Result<Target, String> {
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|e| format!("--url {:?}: {e}", args.url))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url {:?}: only http:// is supported", args.url));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--url {:?}: no host", args.url))?;
    let port = authority.port_u16().unwrap_or(80);
    let addr: SocketAddr = (authority.host(), port)
        .to_socket_addrs()
        .map_err(|e| format!("--url {:?}: {e}", args.url))?
        .next()
        .ok_or_else(|| format!("--url {:?}: the host has no address", args.url))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: openloop\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .map_err(|e| format!("--timeout {}: {e}", args.timeout))?;
    Ok(Target {
        addr,
        request: request.into_bytes(),
        node_header: args.node_header.clone(),
        timeout,
    })
}

/// Each visitor's arrival, as an offset from the first.
fn arrivals(args: &Args) -> Vec<Duration> {
    let total = (args.rate * args.duration).round() as usize;
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut at = 0.0f64;
    (0..total)
        .map(|i| {
            if args.poisson {
                if i > 0 {
                    // Exponential gaps; 1 - f64() is in (0, 1].
                    at += -(1.0 - rng.f64()).ln() / args.rate;
                }
            } else {
                at = i as f64 / args.rate;
            }
            Duration::from_secs_f64(at)
        })
        .collect()
}

/// Visits that overlap at most a few seconds' worth of arrivals each take a
/// socket: raise the open-files limit as far as allowed.
fn raise_open_files_limit() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65536);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

fn cpu_time() -> Duration {
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let (a, b) = (u.user_time(), u.system_time());
            let us = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            us(a) + us(b)
        })
        .unwrap_or_default()
}

/// Visits under way now, and the most at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlight {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(n, Ordering::Relaxed);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let target = Arc::new(target(args)?);
    let offsets = arrivals(args);
    let total = offsets.len();
    let last = offsets.last().copied().unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Record)>();
    let inflight = Arc::new(InFlight::default());
    let t0 = Instant::now() + Duration::from_millis(50);

    let handle = rt.handle().clone();
    let scheduler = {
        let (target, inflight) = (target.clone(), inflight.clone());
        std::thread::Builder::new()
            .name("arrivals".into())
            .spawn(move || {
                for (i, offset) in offsets.into_iter().enumerate() {
                    let due = t0 + offset;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let (target, tx, inflight) = (target.clone(), tx.clone(), inflight.clone());
                    handle.spawn(async move {
                        inflight.enter();
                        let record = visit::visit(&target, due).await;
                        inflight.leave();
                        let _ = tx.send((i, record));
                    });
                }
                Instant::now()
            })
            .map_err(|e| format!("arrivals thread: {e}"))?
    };

    // Every visit ends by its own deadline; the margin only guards against
    // a generator that could not keep up at all.
    let give_up = t0 + last + target.timeout + Duration::from_secs(5);
    let visits = rt.block_on(async move {
        let mut visits: Vec<Option<Record>> = vec![None; total];
        // Ends when the arrivals thread and every visit dropped their sender.
        while let Ok(Some((i, record))) = tokio::time::timeout_at(give_up.into(), rx.recv()).await {
            visits[i] = Some(record);
        }
        visits
    });
    let end = Instant::now();
    let send_end = scheduler
        .join()
        .map_err(|_| "the arrivals thread panicked".to_owned())?;
    drop(rt);
    let run = summary::Run {
        url: &args.url,
        rate: args.rate,
        duration_s: args.duration,
        timeout: target.timeout,
        poisson: args.poisson,
        sending: send_end.saturating_duration_since(t0),
        wall: end.saturating_duration_since(t0),
        max_inflight: inflight.max.load(Ordering::Relaxed),
        cpu: cpu_time(),
    };
    Ok(summary::summarise(&run, &visits))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let visits = args.rate * args.duration;
    if !(args.rate > 0.0 && args.duration > 0.0 && args.timeout > 0.0 && visits <= 10_000_000.0) {
        eprintln!("openloop: rate, duration and timeout must be positive, and rate x duration at most 10,000,000");
        return ExitCode::from(2);
    }
    raise_open_files_limit();
    let out = match run(&args) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("openloop: {e}");
            return ExitCode::from(2);
        }
    };
    let text = match serde_json::to_string_pretty(&out) {
        Ok(t) => t + "\n",
        Err(e) => {
            eprintln!("openloop: {e}");
            return ExitCode::from(2);
        }
    };
    match &args.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("openloop: writing {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
        None => print!("{text}"),
    }
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let lat = &out["latency_ms"];
    let errors: u64 = out["errors"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    eprintln!(
        "openloop: {} sent ({:.0}/s), {} ok, {} timeouts, {} errors, p50 {:.1} p99 {:.1} p99.9 {:.1} ms, nodes {}, lag p99 {:.2} ms, cpu {:.2} s",
        out["sent"],
        num(&out["achieved_rate"]),
        out["ok"],
        out["timeouts"],
        errors,
        num(&lat["p50"]),
        num(&lat["p99"]),
        num(&lat["p99.9"]),
        out["nodes"],
        num(&out["send_lag_ms"]["p99"]),
        num(&out["cpu_s"]),
    );
    ExitCode::SUCCESS
}
