//! The demo web node: a small HTTP/1.1 server on tokio with a fixed number of
//! workers, whose `/server-status?auto` page is in Apache 2.4's exact format and
//! reports its real in-flight requests. `webcluster demo` runs three behind the
//! proxy; integration tests use them as controllable nodes.
//!
//! This module owns request parsing (httparse), keep-alive, the worker pool, the
//! routes and the status page. Behaviour worth knowing:
//! - a request holds a worker (semaphore permit) from the end of its header to the
//!   end of its response; one that finds none free waits, like a connection in
//!   Apache's backlog; idle keep-alive connections hold none (like mpm_event);
//! - `/server-status` takes a worker if one is free and is answered anyway if not;
//!   it ignores `delay` and [`DemoNode::set_stall`] (mod_status is Apache's own
//!   handler), so a stalled node still looks alive and a test sees the proxy's timeout;
//! - `delay` applies to every other route; stalled requests keep their worker and are
//!   answered once the stall is lifted (or dropped at shutdown);
//! - the worker is released, and the request counted, just before the response is
//!   written, so a client holding its response already sees `busy()`/`served()` updated;
//! - request bodies (Content-Length or chunked) are read and discarded; `Expect:
//!   100-continue` is honoured; bad framing or syntax gets 400 and a close, a header
//!   over 16 KiB (or over 64 fields) gets 431; keep-alive idle timeout is 5 s.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BytesMut};
use maud::{html, DOCTYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 16 * 1024;
const MAX_SLEEP_MS: u64 = 60_000;
const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

#[derive(Debug, Clone)]
pub struct DemoNodeConfig {
    pub name: String,
    /// Port 0 = ephemeral.
    pub listen: SocketAddr,
    pub workers: usize,
    /// Added to every request except `/server-status`.
    pub delay: Duration,
}

impl Default for DemoNodeConfig {
    fn default() -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        DemoNodeConfig {
            name: "demo".into(),
            listen,
            workers: 8,
            delay: Duration::ZERO,
        }
    }
}

/// A running demo node; dropping it also stops it (without waiting).
pub struct DemoNode {
    sh: Arc<Shared>,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

struct Shared {
    name: String,
    workers: usize,
    delay: Duration,
    sem: Semaphore,
    served: AtomicU64,
    body_bytes: AtomicU64,
    duration_us: AtomicU64,
    conns: AtomicUsize,
    keepalive: AtomicUsize,
    closing: AtomicUsize,
    started: Instant,
    started_at: SystemTime,
    stall: watch::Sender<bool>,
    stop: watch::Sender<bool>,
}

impl DemoNode {
    /// Bind and start serving on the current tokio runtime. Returns once listening.
    pub async fn start(cfg: DemoNodeConfig) -> io::Result<DemoNode> {
        if cfg.workers == 0 || cfg.workers > 100_000 || cfg.name.chars().any(char::is_control) {
            let msg =
                "demo node: workers must be 1..=100000 and the name free of control characters";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let sh = Arc::new(Shared {
            sem: Semaphore::new(cfg.workers),
            name: cfg.name,
            workers: cfg.workers,
            delay: cfg.delay,
            served: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            duration_us: AtomicU64::new(0),
            conns: AtomicUsize::new(0),
            keepalive: AtomicUsize::new(0),
            closing: AtomicUsize::new(0),
            started: Instant::now(),
            started_at: SystemTime::now(),
            stall: watch::Sender::new(false),
            stop: watch::Sender::new(false),
        });
        let task = tokio::spawn(accept_loop(listener, sh.clone()));
        Ok(DemoNode {
            sh,
            addr,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.sh.name
    }

    /// Requests being handled now (holding a worker).
    pub fn busy(&self) -> usize {
        self.sh.busy()
    }

    /// Requests served (responses written, error responses included).
    pub fn served(&self) -> u64 {
        self.sh.served.load(Relaxed)
    }

    /// Stop accepting, close connections, wait (bounded) for the accept loop to end.
    pub async fn shutdown(mut self) {
        self.sh.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// While true, requests other than `/server-status` are read but not answered.
    pub fn set_stall(&self, stall: bool) {
        self.sh.stall.send_replace(stall);
    }
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        self.sh.stop.send_replace(true);
    }
}

async fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = wait_until(&sh.stop, true) => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(node = %sh.name, "demo node accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = wait_until(&sh.stop, true) => {}
                r = serve_conn(&sh, stream, peer) => if let Err(e) = r {
                    tracing::debug!(node = %sh.name, %peer, "demo node connection: {e}");
                },
            }
        });
    }
}

async fn wait_until(flag: &watch::Sender<bool>, value: bool) {
    let mut rx = flag.subscribe();
    let _ = rx.wait_for(|v| *v == value).await;
}

/// Counts itself in an atomic while alive.
struct Gauge<'a>(&'a AtomicUsize);
impl<'a> Gauge<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Relaxed);
        Gauge(c)
    }
}
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

struct Request {
    method: String,
    target: String,
    version: u8,
    headers: Vec<(String, String)>,
}

impl Request {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let named = self
            .headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name));
        named.map(|(_, v)| v.as_str())
    }
    fn has_token(&self, name: &str, token: &str) -> bool {
        let mut tokens = self.values(name).flat_map(|v| v.split(','));
        tokens.any(|t| t.trim().eq_ignore_ascii_case(token))
    }
    fn keep_alive(&self) -> bool {
        !self.has_token("connection", "close")
            && (self.version == 1 || self.has_token("connection", "keep-alive"))
    }
    /// Body framing: `Some(n)` bytes or `None` for chunked; `Err` when invalid.
    fn body(&self) -> Result<Option<u64>, ()> {
        if let Some(te) = self.values("transfer-encoding").last() {
            let chunked = te
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
            return if chunked && self.values("content-length").next().is_none() {
                Ok(None)
            } else {
                Err(())
            };
        }
        let mut len = None;
        for v in self.values("content-length").flat_map(|v| v.split(',')) {
            let n: u64 = v.trim().parse().map_err(|_| ())?;
            if len.is_some_and(|l| l != n) {
                return Err(());
            }
            len = Some(n);
        }
        Ok(Some(len.unwrap_or(0)))
    }
}

enum Head {
    Req(Request),
    Eof,
    Bad(u16),
}

fn bad() -> io::Error {
    io::ErrorKind::InvalidData.into()
}

async fn timed<T>(f: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(IDLE_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn fill(&mut self) -> io::Result<()> {
        self.buf.reserve(8192);
        match timed(self.io.read_buf(&mut self.buf)).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    async fn head(&mut self) -> io::Result<Head> {
        use httparse::Status::{Complete, Partial};
        loop {
            if !self.buf.is_empty() {
                let mut fields = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut fields);
                let parsed = match req.parse(&self.buf) {
                    Ok(Complete(n)) if n <= MAX_HEAD => Some((
                        n,
                        Request {
                            method: req.method.unwrap_or_default().to_owned(),
                            target: req.path.unwrap_or_default().to_owned(),
                            version: req.version.unwrap_or(1),
                            headers: (req.headers.iter())
                                .map(|h| {
                                    (
                                        h.name.to_owned(),
                                        String::from_utf8_lossy(h.value).into_owned(),
                                    )
                                })
                                .collect(),
                        },
                    )),
                    Ok(Partial) if self.buf.len() <= MAX_HEAD => None,
                    Ok(_) | Err(httparse::Error::TooManyHeaders) => return Ok(Head::Bad(431)),
                    Err(_) => return Ok(Head::Bad(400)),
                };
                if let Some((n, parsed)) = parsed {
                    self.buf.advance(n);
                    return Ok(Head::Req(parsed));
                }
            }
            match self.fill().await {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.buf.is_empty() => {
                    return Ok(Head::Eof)
                }
                r => r?,
            }
        }
    }

    async fn discard(&mut self, mut n: u64) -> io::Result<()> {
        loop {
            let take = n.min(self.buf.len() as u64);
            self.buf.advance(take as usize);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.buf[..i])
                    .trim_end_matches('\r')
                    .to_owned();
                self.buf.advance(i + 1);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad());
            }
            self.fill().await?;
        }
    }

    async fn discard_chunked(&mut self) -> io::Result<()> {
        loop {
            let line = self.line().await?;
            let size = line
                .split_once(';')
                .map_or(line.as_str(), |(s, _)| s)
                .trim();
            match u64::from_str_radix(size, 16).map_err(|_| bad())? {
                0 => while !self.line().await?.is_empty() {},
                n => {
                    self.discard(n.saturating_add(2)).await?;
                    continue;
                }
            }
            return Ok(());
        }
    }
}

struct Resp {
    code: u16,
    ctype: &'static str,
    body: String,
}

fn resp(code: u16, ctype: &'static str, body: impl Into<String>) -> Resp {
    Resp {
        code,
        ctype,
        body: body.into(),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        431 => "Request Header Fields Too Large",
        _ => "",
    }
}

fn error(code: u16) -> Resp {
    resp(code, TEXT, format!("{code} {}\n", reason(code)))
}

async fn serve_conn(sh: &Shared, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let _open = Gauge::new(&sh.conns);
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        io: stream,
        buf: BytesMut::new(),
    };
    serve_requests(sh, &mut c, peer).await?;
    // Lingering close, as Apache does: send FIN, then drain what the client still sends,
    // so that unread input does not turn the close into a reset that loses our response.
    let _closing = Gauge::new(&sh.closing);
    c.io.shutdown().await?;
    let mut sink = [0u8; 4096];
    let drain = async { while c.io.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}

async fn serve_requests(sh: &Shared, c: &mut Conn, peer: SocketAddr) -> io::Result<()> {
    let mut reused = false;
    loop {
        let head = {
            let _idle = reused.then(|| Gauge::new(&sh.keepalive));
            c.head().await?
        };
        reused = true;
        let started = Instant::now();
        let req = match head {
            Head::Eof => return Ok(()),
            Head::Bad(code) => return sh.send(c, &error(code), None, started).await,
            Head::Req(req) => req,
        };
        let (path, query) = req
            .target
            .split_once('?')
            .unwrap_or((req.target.as_str(), ""));
        let status = path == "/server-status";
        let permit = if status {
            sh.sem.try_acquire().ok()
        } else {
            sh.sem.acquire().await.ok()
        };
        let Ok(body) = req.body() else {
            return sh.send(c, &error(400), None, started).await;
        };
        if body != Some(0) && req.version == 1 && req.has_token("expect", "100-continue") {
            timed(c.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")).await?;
        }
        let read = match body {
            Some(n) => c.discard(n).await,
            None => c.discard_chunked().await,
        };
        match read {
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return sh.send(c, &error(400), None, started).await;
            }
            r => r?,
        }
        if !status {
            wait_until(&sh.stall, false).await;
            tokio::time::sleep(sh.delay).await;
        }
        let busy = if permit.is_some() {
            sh.busy()
        } else {
            sh.workers
        };
        let resp = sh.route(&req, path, query, peer, busy).await;
        drop(permit); // before the write: a client holding its response sees busy() updated
        sh.send(c, &resp, Some(&req), started).await?;
        if !req.keep_alive() {
            return Ok(());
        }
    }
}

impl Shared {
    fn busy(&self) -> usize {
        self.workers.saturating_sub(self.sem.available_permits())
    }

    async fn route(
        &self,
        req: &Request,
        path: &str,
        query: &str,
        peer: SocketAddr,
        busy: usize,
    ) -> Resp {
        let name = &self.name;
        match path {
            "/server-status" if query.split('&').any(|p| p == "auto") => resp(
                200,
                TEXT,
                self.status_page(busy, self.started.elapsed().as_secs()),
            ),
            "/server-status" => {
                let page = html! { (DOCTYPE) html { body { p { "Add " code { "?auto" } " for the machine-readable status page." } } } };
                resp(200, HTML, page.into_string())
            }
            "/sleep" => match query
                .split('&')
                .find_map(|p| p.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms.min(MAX_SLEEP_MS))).await;
                    resp(200, TEXT, format!("{name}\n"))
                }
                None => resp(400, TEXT, "400 Bad Request: /sleep needs ?ms=N\n"),
            },
            "/headers" => {
                let mut body: String = req
                    .headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {v}\n"))
                    .collect();
                body += &format!("remote-addr: {peer}\n");
                resp(200, TEXT, body)
            }
            "/node" => resp(200, TEXT, name.as_str()),
            _ => {
                let page = html! {
                    (DOCTYPE)
                    html {
                        head { title { "demo node " (name) } }
                        body {
                            h1 { "Hello from demo node " b { (name) } }
                            p { (req.method) " " code { (req.target) } }
                            p { "Busy workers: " (busy) "/" (self.workers) }
                        }
                    }
                };
                resp(200, HTML, page.into_string())
            }
        }
    }

    /// Count a response, then write it (no body for HEAD); `req: None` means close.
    async fn send(
        &self,
        c: &mut Conn,
        r: &Resp,
        req: Option<&Request>,
        started: Instant,
    ) -> io::Result<()> {
        let keep = req.is_some_and(Request::keep_alive);
        let connection = match req {
            Some(req) if keep && req.version == 0 => "Connection: keep-alive\r\n",
            _ if keep => "",
            _ => "Connection: close\r\n",
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: webcluster-demo\r\nX-Demo-Node: {}\r\n\
             Content-Type: {}\r\nContent-Length: {}\r\n{connection}\r\n",
            r.code,
            reason(r.code),
            httpdate::fmt_http_date(SystemTime::now()),
            self.name,
            r.ctype,
            r.body.len(),
        );
        if req.is_none_or(|req| req.method != "HEAD") {
            out += &r.body;
        }
        self.served.fetch_add(1, Relaxed);
        self.body_bytes.fetch_add(r.body.len() as u64, Relaxed);
        self.duration_us
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        timed(c.io.write_all(out.as_bytes())).await
    }

    /// Apache 2.4 mod_status `?auto` (ExtendedStatus On, mpm_event); `busy` includes
    /// the status request itself.
    fn status_page(&self, busy: usize, uptime: u64) -> String {
        let (busy, workers) = (busy.clamp(1, self.workers), self.workers);
        let accesses = self.served.load(Relaxed);
        let kbytes = self.body_bytes.load(Relaxed) / 1024;
        let duration_ms = self.duration_us.load(Relaxed) / 1000;
        let [l1, l5, l15] = loadavg();
        let (user, system) = cpu_seconds();
        // Lines mod_status leaves out when their divisor is 0.
        let per = |key: &str, v: f64, d: u64| match d {
            0 => String::new(),
            d => format!("{key}: {}\n", apr_g(v / d as f64)),
        };
        let (kb, acc) = (1024.0 * kbytes as f64, accesses as f64);
        format!(
            "{name}\nServerVersion: Apache/2.4 (webcluster demo node)\nServerMPM: event\nServer Built: {}\n\
             CurrentTime: {}\nRestartTime: {}\nParentServerConfigGeneration: 1\nParentServerMPMGeneration: 0\n\
             ServerUptimeSeconds: {uptime}\nServerUptime:{}\nLoad1: {l1:.2}\nLoad5: {l5:.2}\nLoad15: {l15:.2}\n\
             Total Accesses: {accesses}\nTotal kBytes: {kbytes}\nTotal Duration: {duration_ms}\n\
             CPUUser: {}\nCPUSystem: {}\nCPUChildrenUser: 0\nCPUChildrenSystem: 0\n{}Uptime: {uptime}\n{}{}{}{}\
             BusyWorkers: {busy}\nGracefulWorkers: 0\nIdleWorkers: {}\nProcesses: 1\nStopping: 0\n\
             ConnsTotal: {}\nConnsAsyncWaitIO: 0\nConnsAsyncWriting: 0\nConnsAsyncKeepAlive: {}\n\
             ConnsAsyncClosing: {}\nScoreboard: {}{}\n",
            apache_time(self.started_at).1,
            apache_time(SystemTime::now()).0,
            apache_time(self.started_at).0,
            uptime_words(uptime),
            apr_g(user),
            apr_g(system),
            per("CPULoad", (user + system) * 100.0, uptime),
            per("ReqPerSec", acc, uptime),
            per("BytesPerSec", kb, uptime),
            per("BytesPerReq", kb, accesses),
            per("DurationPerReq", duration_ms as f64, accesses),
            workers - busy,
            self.conns.load(Relaxed),
            self.keepalive.load(Relaxed),
            self.closing.load(Relaxed),
            "W".repeat(busy),
            "_".repeat(workers - busy),
            name = self.name,
        )
    }
}

/// `(CurrentTime form "Friday, 27-Nov-2026 02:39:17 UTC", Server Built form "2026-11-27T02:39:17")`.
fn apache_time(t: SystemTime) -> (String, String) {
    const DAYS: [&str; 7] = ["Mon", "Tues", "Wednes", "Thurs", "Fri", "Satur", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let http = httpdate::fmt_http_date(t); // "Fri, 27 Nov 2026 02:39:17 GMT"
    let [wd, d, m, y, hms, _] = http.split(' ').collect::<Vec<_>>()[..] else {
        return (http.clone(), http);
    };
    let day = DAYS.iter().find(|n| wd.starts_with(&n[..3])).unwrap_or(&"");
    let month = MONTHS.iter().position(|n| *n == m).unwrap_or(0) + 1;
    let current = format!("{day}day, {d}-{m}-{y} {hms} UTC");
    (current, format!("{y}-{month:02}-{d}T{hms}"))
}

/// mod_status's `show_time`: " 1 day 2 hours 3 seconds" (empty at 0).
fn uptime_words(mut t: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("day", 86_400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ];
    let mut s = String::new();
    for (unit, secs) in UNITS {
        let k = t / secs;
        t %= secs;
        if k > 0 {
            s += &format!(" {k} {unit}{}", if k == 1 { "" } else { "s" });
        }
    }
    s
}

/// APR's `%g`: 6 significant digits, fixed notation up to 10 integer digits, no leading 0 (".41").
fn apr_g(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let sci = format!("{:.5e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = exp.parse::<i32>().unwrap_or(0) + 1;
    if !(-3..=10).contains(&point) {
        return format!("{v:e}");
    }
    let mut s = match usize::try_from(point) {
        Ok(p) if p >= digits.len() => format!("{digits}{}", "0".repeat(p - digits.len())),
        Ok(p) if p > 0 => format!("{}.{}", &digits[..p], &digits[p..]),
        _ => format!(".{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
    };
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    if v < 0.0 {
        s.insert(0, '-');
    }
    s
}

fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [(); 3].map(|_| fields.next().unwrap_or(0.0))
}

/// User and system CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks/s), else 0.
fn cpu_seconds() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after_comm
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let secs = |i: usize| fields.get(i).copied().unwrap_or(0.0) / 100.0;
    (secs(11), secs(12))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    const T: Duration = Duration::from_secs(5);

    async fn node(workers: usize) -> DemoNode {
        let cfg = DemoNodeConfig {
            name: "n1".into(),
            workers,
            ..DemoNodeConfig::default()
        };
        DemoNode::start(cfg).await.unwrap()
    }

    struct Reply {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads one response (Content-Length framed); `None` on EOF.
    async fn read_reply(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Reply> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(n) = r.parse(buf).unwrap() {
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| (h.name.into(), String::from_utf8(h.value.into()).unwrap()))
                    .collect();
                let code = r.code.unwrap();
                let reply = Reply {
                    code,
                    headers,
                    body: String::new(),
                };
                let len: usize = reply.header("content-length").unwrap().parse().unwrap();
                while buf.len() < n + len {
                    assert!(s.read_buf(buf).await.unwrap() > 0, "EOF in body");
                }
                buf.advance(n);
                let body = String::from_utf8(buf.split_to(len).to_vec()).unwrap();
                return Some(Reply { body, ..reply });
            }
            if s.read_buf(buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    async fn exchange(s: &mut TcpStream, buf: &mut BytesMut, raw: &str) -> Option<Reply> {
        s.write_all(raw.as_bytes()).await.unwrap();
        timeout(T, read_reply(s, buf)).await.unwrap()
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        exchange(&mut s, &mut BytesMut::new(), &raw).await.unwrap()
    }

    async fn wait_busy(n: &DemoNode, k: usize) {
        let poll = async {
            while n.busy() < k {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        timeout(T, poll).await.unwrap();
    }

    #[tokio::test]
    async fn node_route_returns_name_with_headers() {
        let n = node(4).await;
        let r = get(n.addr(), "/node").await;
        assert_eq!((r.code, r.body.as_str()), (200, "n1"));
        assert_eq!(r.header("x-demo-node"), Some("n1"));
        assert_eq!(r.header("server"), Some("webcluster-demo"));
        assert!(r.header("date").is_some() && r.header("content-type").is_some());
        assert_eq!(n.name(), "n1");
        n.shutdown().await;
    }

    #[tokio::test]
    async fn keep_alive_serves_three_requests_on_one_connection() {
        let n = node(4).await;
        let mut s = TcpStream::connect(n.addr()).await.unwrap();
        let mut buf = BytesMut::new();
        for i in 0..3 {
            let r = exchange(
                &mut s,
                &mut buf,
                &format!("GET /page{i} HTTP/1.1\r\nHost: x\r\n\r\n"),
            )
            .await
            .unwrap();
            assert_eq!(r.code, 200);
            assert!(r.body.contains(&format!("/page{i}")) && r.header("connection").is_none());
        }
        // A POST with a chunked body, then one with Content-Length, on the same connection.
        let chunked =
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(exchange(&mut s, &mut buf, chunked).await.unwrap().code, 200);
        let sized = "POST /node HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        let r = exchange(&mut s, &mut buf, sized).await.unwrap();
        assert_eq!(
            (r.body.as_str(), r.header("connection")),
            ("n1", Some("close"))
        );
        assert!(
            timeout(T, read_reply(&mut s, &mut buf))
                .await
                .unwrap()
                .is_none(),
            "closed after close"
        );
        assert_eq!(n.served(), 5);
    }

    #[tokio::test]
    async fn http10_closes_unless_keep_alive_asked() {
        let n = node(2).await;
        let mut s = TcpStream::connect(n.addr()).await.unwrap();
        let mut buf = BytesMut::new();
        let r = exchange(
            &mut s,
            &mut buf,
            "GET /node HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(r.header("connection"), Some("keep-alive"));
        s.write_all(b"HEAD /node HTTP/1.0\r\n\r\n").await.unwrap();
        let mut raw = String::new();
        timeout(T, s.read_to_string(&mut raw))
            .await
            .unwrap()
            .unwrap();
        assert!(
            raw.contains("Content-Length: 2\r\n") && raw.ends_with("Connection: close\r\n\r\n"),
            "{raw}"
        );
    }

    #[tokio::test]
    async fn status_page_idle() {
        let n = node(4).await;
        let page = get(n.addr(), "/server-status?auto").await;
        assert_eq!(page.header("content-type"), Some(TEXT));
        let lines: Vec<&str> = page.body.lines().collect();
        assert_eq!(lines[0], "n1");
        assert_eq!(lines[1], "ServerVersion: Apache/2.4 (webcluster demo node)");
        assert_eq!(lines[2], "ServerMPM: event");
        for want in [
            "BusyWorkers: 1",
            "IdleWorkers: 3",
            "Scoreboard: W___",
            "Total Accesses: 0",
            "Processes: 1",
        ] {
            assert!(lines.contains(&want), "{want} missing in\n{}", page.body);
        }
        assert!(page.body.contains("\nLoad1: ") && page.body.contains("\nCurrentTime: "));
        assert!(
            !page.body.contains("DurationPerReq"),
            "no per-request rates before any request"
        );
        let html = get(n.addr(), "/server-status").await;
        assert!(html.body.contains("?auto") && html.header("content-type") == Some(HTML));
    }

    #[tokio::test]
    async fn status_page_counts_in_flight_requests_and_accesses() {
        let n = node(4).await;
        let addr = n.addr();
        let sleepers: Vec<_> = (0..2)
            .map(|_| tokio::spawn(async move { get(addr, "/sleep?ms=1000").await }))
            .collect();
        wait_busy(&n, 2).await;
        let page = get(addr, "/server-status?auto").await.body;
        for want in [
            "BusyWorkers: 3",
            "IdleWorkers: 1",
            "Scoreboard: WWW_",
            "ConnsTotal: 3",
        ] {
            assert!(page.lines().any(|l| l == want), "{want} missing in\n{page}");
        }
        for s in sleepers {
            assert_eq!(s.await.unwrap().body, "n1\n");
        }
        assert_eq!(n.busy(), 0);
        let page = get(addr, "/server-status?auto").await.body;
        assert!(page.lines().any(|l| l == "Total Accesses: 3"), "{page}");
        assert!(page.contains("\nBytesPerReq: ") && page.contains("\nDurationPerReq: "));
        assert_eq!(n.served(), 4);
    }

    #[tokio::test]
    async fn headers_route_and_escaped_page() {
        let n = node(2).await;
        let r = get(n.addr(), "/headers").await;
        let local = r
            .body
            .lines()
            .find_map(|l| l.strip_prefix("remote-addr: "))
            .unwrap();
        assert!(
            local.parse::<SocketAddr>().is_ok() && r.body.contains("Host: x\n"),
            "{}",
            r.body
        );
        let r = get(n.addr(), "/<script>?a=1&b=2").await;
        assert!(
            r.body.contains("Hello from demo node <b>n1</b>"),
            "{}",
            r.body
        );
        assert!(r.body.contains("/&lt;script&gt;?a=1&amp;b=2") && !r.body.contains("<script>"));
        assert!(r.body.contains("Busy workers: 1/2"));
    }

    #[tokio::test]
    async fn garbage_gets_400_and_close() {
        let n = node(2).await;
        let cases = [
            "\x00\x01\x02 garbage\r\n\r\n".to_string(),
            "GET / HTTP/1.1\r\nbad header line\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".into(),
            "GET /sleep?ms=soon HTTP/1.1\r\nConnection: close\r\n\r\n".into(),
        ];
        for raw in cases {
            let mut s = TcpStream::connect(n.addr()).await.unwrap();
            let mut buf = BytesMut::new();
            let r = exchange(&mut s, &mut buf, &raw).await.unwrap();
            assert_eq!(r.code, 400, "{raw:?}");
            assert!(
                timeout(T, read_reply(&mut s, &mut buf))
                    .await
                    .unwrap()
                    .is_none(),
                "{raw:?}"
            );
        }
        let mut s = TcpStream::connect(n.addr()).await.unwrap();
        let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        assert_eq!(
            exchange(&mut s, &mut BytesMut::new(), &huge)
                .await
                .unwrap()
                .code,
            431
        );
    }

    #[tokio::test]
    async fn stall_leaves_requests_unanswered_until_lifted() {
        let n = node(2).await;
        n.set_stall(true);
        let mut s = TcpStream::connect(n.addr()).await.unwrap();
        let mut buf = BytesMut::new();
        s.write_all(b"GET /node HTTP/1.1\r\n\r\n").await.unwrap();
        wait_busy(&n, 1).await;
        let early = timeout(Duration::from_millis(300), read_reply(&mut s, &mut buf)).await;
        assert!(early.is_err(), "a stalled node must not answer");
        let page = get(n.addr(), "/server-status?auto").await.body;
        assert!(
            page.contains("\nBusyWorkers: 2\n"),
            "the stalled request holds a worker:\n{page}"
        );
        n.set_stall(false);
        let r = timeout(T, read_reply(&mut s, &mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.body, "n1");
    }

    #[tokio::test]
    async fn shutdown_ends_accept_loop_and_closes_connections() {
        let n = node(2).await;
        let addr = n.addr();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = BytesMut::new();
        exchange(&mut s, &mut buf, "GET /node HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        timeout(T, n.shutdown()).await.unwrap();
        assert!(timeout(T, read_reply(&mut s, &mut buf))
            .await
            .unwrap()
            .is_none());
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }

    #[test]
    fn apache_number_and_time_formats() {
        let cases = [
            (0.41, ".41"),
            (69.333_33, "69.3333"),
            (0.761_456, ".761456"),
            (15035.7, "15035.7"),
        ];
        for (v, want) in cases.into_iter().chain([
            (6_158_677.3, "6158680"),
            (5.0, "5"),
            (0.041, ".041"),
            (0.0, "0"),
        ]) {
            assert_eq!(apr_g(v), want);
        }
        assert_eq!(uptime_words(0), "");
        assert_eq!(uptime_words(3), " 3 seconds");
        assert_eq!(uptime_words(90_061), " 1 day 1 hour 1 minute 1 second");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_747_157);
        let (current, built) = apache_time(t);
        assert_eq!(current, "Friday, 27-Nov-2026 02:39:17 UTC");
        assert_eq!(built, "2026-11-27T02:39:17");
    }

    #[tokio::test]
    async fn rate_lines_only_with_uptime_and_bad_config_rejected() {
        let n = node(3).await;
        assert!(!n.sh.status_page(1, 0).contains("ReqPerSec"));
        let page = n.sh.status_page(1, 7);
        assert!(
            page.contains("\nServerUptime: 7 seconds\nLoad1: ")
                && page.contains("\nReqPerSec: 0\n"),
            "{page}"
        );
        assert!(page.contains("\nCPULoad: "));
        let bad = DemoNodeConfig {
            workers: 0,
            ..DemoNodeConfig::default()
        };
        assert!(DemoNode::start(bad).await.is_err());
    }
}
