//! The validated internal configuration model.
//!
//! Everything outside `config/` reads these types, never the TOML file
//! types: a `Config` is only ever built by [`crate::config::load`] /
//! [`crate::config::parse`], which check every rule in one place, so code
//! holding a `Config` may rely on its invariants (every group has at least one
//! node, at least one node of a group has a weight above 0, routes name
//! existing groups, names are unique).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use crate::balance::BalanceMethod;
pub use crate::status::ServerKind;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from (for messages).
    pub source: PathBuf,
    /// A hex digest of the file's bytes, shown on the status page and in
    /// metrics so an operator can tell which config is live.
    pub hash: String,
    pub server: ServerSettings,
    pub admin: AdminSettings,
    pub access_log: AccessLog,
    pub timeouts: Timeouts,
    pub retries: Retries,
    pub limits: Limits,
    pub buffering: Buffering,
    /// Name resolution of nodes written as host names and of SRV groups
    /// (`[discovery]`, see `crate::discovery`).
    pub discovery: Discovery,
    /// Paths of node status pages that visitors may never reach through the
    /// proxy (already normalised: lower case, no trailing slash).
    pub protected_paths: Vec<String>,
    pub groups: Vec<GroupConfig>,
    /// Routes in file order; the first match wins.
    pub routes: Vec<RouteConfig>,
    /// Group that serves requests no route matches.
    pub default_group: String,
    /// TLS listeners (`[[tls]]`), in file order; none by default.
    pub tls: Vec<TlsListener>,
}

/// A TLS listener (`[[tls]]`): visitors' HTTPS, terminated by the proxy
/// (`crate::tls`).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    /// Addresses; none of them is a plain listener too.
    pub listen: Vec<SocketAddr>,
    /// Loaded and checked; at least one. The first is the default (no SNI
    /// name, or one no certificate names).
    pub certificates: Vec<crate::tls::Certificate>,
    /// The oldest protocol version accepted (TLS 1.2 by default).
    pub min_version: TlsVersion,
    /// Offer HTTP/2 in ALPN (takes effect once the proxy serves h2; until
    /// then only `http/1.1` is offered).
    pub http2: bool,
    /// TLS session tickets (stateless resumption; keys made at start and
    /// rotated every 6 hours, in memory only).
    pub session_tickets: bool,
    /// Sessions kept in memory for resumption by id (TLS 1.2) and stateful
    /// tickets (TLS 1.3 without `session_tickets`); 0 turns it off.
    pub session_cache: usize,
}

/// A TLS protocol version (`[[tls]] min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// `Strict-Transport-Security` on a route's responses over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hsts {
    pub max_age: Duration,
    pub include_subdomains: bool,
}

impl Hsts {
    /// The header value, e.g. `max-age=31536000; includeSubDomains`.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        v
    }
}

/// Process-wide settings (`[server]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Proxy listeners.
    pub listen: Vec<SocketAddr>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Which CPUs the worker threads run on.
    pub cpu_affinity: CpuAffinity,
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub grace_period: Duration,
    /// Default log filter (overridden by `RUST_LOG`).
    pub log_level: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where the pid is written (for `webcluster reload`), if anywhere.
    pub pid_file: Option<PathBuf>,
    /// Unix socket used to hand listening sockets to a new binary on upgrade.
    pub upgrade_sock: PathBuf,
    /// Clients whose own `X-Forwarded-For` is kept and appended to.
    pub trusted_proxies: Vec<IpNet>,
    /// Sources whose connections start with a PROXY protocol header (an L4
    /// balancer or a proxy in front): the visitor's address comes from it.
    pub proxy_protocol_from: Vec<IpNet>,
    /// Where operator changes of nodes (drain, maint, weight) are kept
    /// across restarts, if anywhere (`cluster::operator`).
    pub state_file: Option<PathBuf>,
    /// Plain listeners take HTTP/2 with prior knowledge (h2c): a connection
    /// that starts with the HTTP/2 preface is served as HTTP/2.
    pub h2c: bool,
}

/// Which CPUs the proxy's worker threads run on (`[server]
/// cpu_affinity`): nginx's `worker_cpu_affinity`, HAProxy's `cpu-map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuAffinity {
    /// Wherever the kernel puts them (the default, as nginx's).
    Off,
    /// Worker `i` on the `i`-th of the CPUs the process may run on, over
    /// again when there are more workers than CPUs (nginx's `auto`).
    Auto,
    /// Worker `i` on CPU `cpus[i % cpus.len()]` (never empty).
    Cpus(Vec<usize>),
}

/// How log lines are written (`[server] log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event (colour only on a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The admin listener (`[admin]`): status page, JSON, `?auto`, metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// `None` when the admin listener is disabled.
    pub listen: Option<SocketAddr>,
    /// Source networks allowed to read it; everyone else gets 403.
    pub allow: Vec<IpNet>,
    /// File holding the bearer token the node control API asks for; without
    /// one the API changes nothing.
    pub token_file: Option<PathBuf>,
}

/// Where the access log goes (`[access_log]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

/// Upstream and client-side timeouts (`[timeouts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to a node.
    pub connect: Duration,
    /// Waiting for each read from a node (response header and body).
    pub read: Duration,
    /// Waiting for each write to a node.
    pub write: Duration,
    /// How long an idle pooled connection to a node is kept.
    pub idle: Duration,
    /// Waiting for a client's whole request head (from its first byte), and
    /// for each read of a request body.
    pub client_read: Duration,
    /// Waiting for each write to a client.
    pub client_write: Duration,
    /// How long an idle client keep-alive connection is kept open.
    pub client_keepalive: Duration,
}

/// Limits on what a visitor may send and a node may answer (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head, start line and header lines (431 beyond).
    pub max_request_head: usize,
    /// Most header lines in a request head (431 beyond) or a response
    /// head (502 beyond).
    pub max_headers: usize,
    /// Largest request body (413 beyond); 0: no limit. nginx's
    /// `client_max_body_size`; a route may set its own.
    pub max_request_body: u64,
    /// Largest response head from a node (502 beyond).
    pub max_response_head: usize,
    /// Streams open at once on one HTTP/2 visitor connection.
    pub http2_max_concurrent_streams: u32,
}

/// Buffering of bodies between visitors and nodes (`[buffering]`), so that a
/// node's worker never waits on a slow visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffering {
    /// Read a request's whole body before a node is chosen (nginx's
    /// `proxy_request_buffering`); a route may turn it off.
    pub requests: bool,
    /// Read a response from the node as fast as it comes, whatever the
    /// visitor's pace (nginx's `proxy_buffering`); a route may turn it off.
    pub responses: bool,
    /// Bytes of one body held in memory; the rest goes to a temporary file.
    pub memory: usize,
    /// Most bytes of one response held in a temporary file (nginx's
    /// `proxy_max_temp_file_size`); beyond that the node is read only as
    /// fast as the visitor takes it.
    pub max_temp_file: u64,
    /// Where the temporary files are made (unlinked at once).
    pub temp_dir: PathBuf,
}

/// How node host names and SRV names are resolved (`[discovery]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// An answer is asked again after its TTL, but never sooner than this.
    pub min_ttl: Duration,
    /// ... and never later than this.
    pub max_ttl: Duration,
    /// Name servers to ask (UDP, then TCP); empty: those of
    /// `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
}

/// Retry policy (`[retries]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Total attempts per request, the first included (nginx's
    /// `proxy_next_upstream_tries`); 1 disables retries.
    pub tries: u32,
    /// Also retry idempotent requests (GET, HEAD, ...) whose connection
    /// failed after it was established, or timed out, on another node.
    pub idempotent_on_error: bool,
}

/// Pooled keep-alive connections from the proxy to a group's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamKeepalive {
    /// Kept; to nodes whose status page says they hold a worker per
    /// connection (Apache prefork and worker), where every idle pooled
    /// connection takes a worker from other visitors, only while the node
    /// has workers to spare and for a short idle time (see
    /// `proxy::pool_for`).
    Auto,
    /// Kept (nginx `keepalive` in an upstream block), except to a node that
    /// holds a worker per connection while it has more requests than
    /// workers (see `proxy::pool_for`).
    On,
    /// A new connection per request (nginx's default).
    Off,
}

impl UpstreamKeepalive {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKeepalive::Auto => "auto",
            UpstreamKeepalive::On => "on",
            UpstreamKeepalive::Off => "off",
        }
    }
}

/// In which order a group's queue is served once it stands (more comes
/// than the nodes take: its oldest request waited half its
/// `queue_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueOrder {
    /// The requests that came last first, then the rest oldest first
    /// ("adaptive LIFO", `cluster::queue`): under overload the served are
    /// served at once and the visitors after it are not kept waiting.
    Adaptive,
    /// Oldest first always, as HAProxy's queue: under overload every
    /// served request waits about `queue_timeout`, and more of a burst is
    /// served in all, the visitors after it waiting behind its leftovers.
    Fifo,
}

impl QueueOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueOrder::Adaptive => "adaptive",
            QueueOrder::Fifo => "fifo",
        }
    }
}

/// Which status page kind a node serves (`status_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusKind {
    /// Detected from the page itself (`"auto"`).
    Auto,
    /// A registered kind (`status::KINDS`), by its name.
    Named(ServerKind),
}

impl StatusKind {
    /// As written in the config: `auto` or the kind's name.
    pub fn name(self) -> &'static str {
        match self {
            StatusKind::Auto => "auto",
            StatusKind::Named(kind) => kind.name(),
        }
    }

    /// The kind to expect, or None to detect it.
    pub fn hint(self) -> Option<ServerKind> {
        match self {
            StatusKind::Auto => None,
            StatusKind::Named(kind) => Some(kind),
        }
    }
}

/// A named group of nodes (`[[group]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    pub balance: BalanceMethod,
    pub nodes: Vec<NodeConfig>,
    /// Passive health: this many failures within `fail_timeout` take a node
    /// out for `fail_timeout` (nginx semantics); 0 disables.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub scrape: ScrapeSettings,
    /// A node coming back up ramps its share up over this long.
    pub slow_start: Duration,
    /// Whether connections to the nodes are kept open for reuse.
    pub upstream_keepalive: UpstreamKeepalive,
    /// How long a request waits in the group's queue for a node under its
    /// limit before it is answered 503; None: the connect timeout (as
    /// HAProxy's `timeout queue`).
    pub queue_timeout: Option<Duration>,
    /// Requests that may wait in the group's queue at once; more are
    /// answered 503 at once. 0: no limit (the wait is still bounded by
    /// `queue_timeout`).
    pub max_queue: u32,
    /// In which order a standing queue is served (`cluster::queue`).
    pub queue_order: QueueOrder,
    /// Session affinity (sticky sessions); off by default.
    pub affinity: Affinity,
    /// Start each connection to a node with a PROXY protocol header
    /// carrying the visitor's address (such connections are not pooled:
    /// each belongs to one visitor connection).
    pub send_proxy_protocol: Option<ProxyVersion>,
    /// A DNS SRV name whose targets are nodes of the group too (with their
    /// port and weight; targets of a priority above the lowest are backups).
    pub srv: Option<SrvNodes>,
}

/// A group's SRV name and how each node found through it is set up (the
/// `srv_*` keys: what a `[[group.node]]` would say, for nodes that have no
/// table of their own, as HAProxy's `server-template` does).
#[derive(Debug, Clone, PartialEq)]
pub struct SrvNodes {
    pub name: String,
    /// Path and query of each target's status page, at the target's own
    /// address and port.
    pub status_path: String,
    pub status_kind: StatusKind,
    pub max_workers: Option<u32>,
}

/// How a group keeps a visitor's session on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AffinityMode {
    /// Every request is balanced by load.
    Off,
    /// Requests carrying one of the application's session cookies go to the
    /// node chosen by rendezvous hashing of the cookie's value.
    Cookie,
    /// The proxy sets its own cookie naming the node (an opaque id).
    Insert,
}

impl AffinityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityMode::Off => "off",
            AffinityMode::Cookie => "cookie",
            AffinityMode::Insert => "insert",
        }
    }
}

/// A version of the PROXY protocol header sent to nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    V1,
    V2,
}

impl ProxyVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        }
    }
}

/// Session affinity settings of a group (`affinity*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub mode: AffinityMode,
    /// Session cookie names looked for in `cookie` mode, in order.
    pub cookies: Vec<String>,
    /// Name of the cookie the proxy sets in `insert` mode.
    pub insert_cookie: String,
    /// When the session's node cannot take it: 503 instead of moving the
    /// session to the next node of its hash order.
    pub strict: bool,
}

/// Polling of the nodes' status pages (the active health check too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapeSettings {
    /// Off: no status pages are read; health is passive only and busyness
    /// falls back to this proxy's own in-flight counts.
    pub enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failed scrapes that mark a node down.
    pub fall: u32,
    /// Consecutive good scrapes that bring it back.
    pub rise: u32,
    /// A status older than this many intervals is stale.
    pub stale_after: u32,
}

/// One web node (`[[group.node]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Unique within its group.
    pub name: String,
    /// Where requests go. For a node written with a host name, the address
    /// it resolved to (in the config the cluster runs), or unspecified
    /// (`0.0.0.0`) in the config as read, until `crate::discovery` resolves it.
    pub address: SocketAddr,
    /// The host name `address` was written with, re-resolved as its TTL says
    /// (`crate::discovery`); `None` for an IP address.
    pub host: Option<String>,
    /// Relative share; 0 means never chosen (but still monitored).
    pub weight: u32,
    /// Serves only when no primary node of the group is usable.
    pub backup: bool,
    /// Stop sending new requests (in-flight ones finish).
    pub drain: bool,
    pub status: StatusUrl,
    pub status_kind: StatusKind,
    /// Worker capacity where the page cannot tell it (Apache 2.2, nginx).
    pub max_workers: Option<u32>,
    /// Most requests this proxy sends to the node at once (HAProxy's
    /// server `maxconn`, nginx's `max_conns`); the node's free workers, as
    /// its status page shows them, may bound it lower (`cluster::limit`).
    pub max_conns: Option<u32>,
}

/// A node's status page location, parsed from `status_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUrl {
    /// The URL as written (or defaulted), for display.
    pub url: String,
    /// Address to connect to.
    pub address: SocketAddr,
    /// `Host` header to send.
    pub host: String,
    /// Path and query to request.
    pub path_and_query: String,
}

/// A routing rule (`[[route]]`): the first whose host and path prefix match
/// picks the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Lower-case host without port; `None` matches any host. A leading
    /// `*.` matches any subdomain.
    pub host: Option<String>,
    /// Path prefix; `/` matches everything.
    pub path_prefix: String,
    pub group: String,
    /// A GET or HEAD answered 404 by a node is tried on the group's other
    /// nodes (content not synced there yet); the first non-404 answer wins.
    pub retry_on_404: bool,
    /// Name of the node (of `group`) that takes the requests that change
    /// content: methods other than GET/HEAD/OPTIONS and `write_paths`.
    pub primary: Option<String>,
    /// Path prefixes whose requests (any method) go to the primary too.
    pub write_paths: Vec<String>,
    /// When the primary is not usable: send writes to any node (true) or
    /// answer 503 (false).
    pub primary_fallback: bool,
    /// `[buffering] requests` for this route, when set.
    pub request_buffering: Option<bool>,
    /// `[buffering] responses` for this route, when set.
    pub response_buffering: Option<bool>,
    /// `[limits] max_request_body` for this route, when set.
    pub max_request_body: Option<u64>,
    /// A request that came over plain HTTP is answered with a 308 to the
    /// same URL over HTTPS (nginx's `return 308 https://$host$request_uri`).
    pub https_redirect: bool,
    /// `Strict-Transport-Security` added to responses over TLS.
    pub hsts: Option<Hsts>,
}

impl Config {
    /// The request body limit of the route with this index (or none): 0 is
    /// no limit.
    pub fn max_request_body(&self, route: Option<usize>) -> u64 {
        route
            .and_then(|i| self.routes.get(i))
            .and_then(|r| r.max_request_body)
            .unwrap_or(self.limits.max_request_body)
    }

    /// Whether request bodies are read whole first on this route.
    pub fn request_buffering(&self, route: Option<usize>) -> bool {
        route
            .and_then(|i| self.routes.get(i))
            .and_then(|r| r.request_buffering)
            .unwrap_or(self.buffering.requests)
    }

    /// Whether responses are read ahead of the visitor on this route.
    pub fn response_buffering(&self, route: Option<usize>) -> bool {
        route
            .and_then(|i| self.routes.get(i))
            .and_then(|r| r.response_buffering)
            .unwrap_or(self.buffering.responses)
    }

    /// The group with this name.
    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.name == name)
    }
}
