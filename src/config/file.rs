//! The configuration file as written, and its validation into the model.
//!
//! The `*File` types mirror the TOML one to one (`deny_unknown_fields`
//! everywhere, so a misspelt key is an error rather than silently ignored).
//! Every optional key is an `Option` here: defaults are filled in, and every
//! rule is checked, in one place, `ConfigFile::into_model`. Values that
//! can be wrong in ways serde cannot see (durations, addresses, names) are
//! kept as `Spanned` strings so the error can name their line.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use serde::Deserialize;
use serde_spanned::Spanned;

use super::error::ConfigError;
use super::model::{
    AccessLog, AdminSettings, Affinity, AffinityMode, BalanceMethod, Buffering, Config,
    CpuAffinity, Discovery, GroupConfig, Hsts, Limits, LogFormat, NodeConfig, ProxyVersion,
    QueueOrder, Retries, RouteConfig, ScrapeSettings, ServerKind, ServerSettings, SrvNodes,
    StatusKind, StatusUrl, Timeouts, TlsListener, TlsVersion, UpstreamKeepalive,
};

// ---------------------------------------------------------------------------
// Defaults (the reference config, conf/webcluster.toml, documents the same).

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_THREADS: usize = 1;
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/webcluster_upgrade.sock";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_ADMIN_ALLOW: &[&str] = &["127.0.0.0/8", "::1/128"];
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
pub const DEFAULT_CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CLIENT_KEEPALIVE: Duration = Duration::from_secs(75);
pub const DEFAULT_TRIES: u32 = 3;
pub const DEFAULT_MAX_REQUEST_HEAD: u64 = 32 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Streams open at once on one HTTP/2 connection (nginx's
/// `http2_max_concurrent_streams` and HAProxy's default).
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// nginx's `client_max_body_size`.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 1024 * 1024;
pub const DEFAULT_MAX_RESPONSE_HEAD: u64 = 32 * 1024;
pub const DEFAULT_BUFFER_MEMORY: u64 = 64 * 1024;
/// nginx's `proxy_max_temp_file_size`.
pub const DEFAULT_MAX_TEMP_FILE: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_PROTECTED_PATHS: &[&str] = &[
    "/server-status",
    "/server-info",
    "/nginx_status",
    "/stub_status",
    "/balancer-manager",
];
pub const DEFAULT_MAX_FAILS: u32 = 1;
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SLOW_START: Duration = Duration::ZERO;
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// The scrape timeout defaults to this, or to the interval if shorter.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_STALE_AFTER: u32 = 3;
pub const DEFAULT_WEIGHT: u32 = 1;
/// Weights above this are rejected, so sums over a group cannot overflow.
pub const MAX_WEIGHT: u32 = 10_000;
pub const DEFAULT_STATUS_PATH: &str = "/server-status?auto";
pub const DEFAULT_DNS_MIN_TTL: Duration = Duration::from_secs(1);
pub const DEFAULT_DNS_MAX_TTL: Duration = Duration::from_secs(300);
/// Session cookies of common platforms (PHP/Bitrix, Java, ASP.NET, Laravel,
/// Django), looked for in `affinity = "cookie"` mode.
pub const DEFAULT_AFFINITY_COOKIES: &[&str] = &[
    "PHPSESSID",
    "JSESSIONID",
    "ASP.NET_SessionId",
    "laravel_session",
    "sessionid",
];
pub const DEFAULT_AFFINITY_INSERT_COOKIE: &str = "WCNODE";
/// About 20 MB at most: nginx's `ssl_session_cache shared:SSL:10m` holds
/// 40,000.
pub const DEFAULT_TLS_SESSION_CACHE: usize = 20_000;

// ---------------------------------------------------------------------------
// The file format.

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub protected_paths: Option<Vec<Spanned<String>>>,
    pub default_group: Option<Spanned<String>>,
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub access_log: AccessLogFile,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub retries: RetriesFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub buffering: BufferingFile,
    #[serde(default)]
    pub discovery: DiscoveryFile,
    #[serde(default, rename = "group")]
    pub groups: Vec<Spanned<GroupFile>>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteFile>>,
    #[serde(default)]
    pub tls: Vec<Spanned<TlsFile>>,
}

/// `[[tls]]`: a TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub listen: Spanned<Vec<Spanned<String>>>,
    pub certificates: Spanned<Vec<CertificateFile>>,
    pub min_version: Option<Spanned<String>>,
    pub http2: Option<bool>,
    pub session_tickets: Option<bool>,
    pub session_cache: Option<Spanned<usize>>,
}

/// One of `[[tls]] certificates`: `{ chain = "...", key = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    pub chain: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub threads: Option<Spanned<usize>>,
    pub cpu_affinity: Option<Spanned<String>>,
    pub grace_period: Option<Spanned<String>>,
    pub log_level: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
    pub pid_file: Option<Spanned<String>>,
    pub upgrade_sock: Option<Spanned<String>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub proxy_protocol_from: Option<Vec<Spanned<String>>>,
    pub state_file: Option<Spanned<String>>,
    pub h2c: Option<bool>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub enabled: Option<bool>,
    pub listen: Option<Spanned<String>>,
    pub allow: Option<Vec<Spanned<String>>>,
    pub token_file: Option<Spanned<String>>,
}

/// `[access_log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    pub target: Option<Spanned<String>>,
}

/// `[timeouts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    pub connect: Option<Spanned<String>>,
    pub read: Option<Spanned<String>>,
    pub write: Option<Spanned<String>>,
    pub idle: Option<Spanned<String>>,
    pub client_read: Option<Spanned<String>>,
    pub client_write: Option<Spanned<String>>,
    pub client_keepalive: Option<Spanned<String>>,
}

/// `[retries]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesFile {
    pub tries: Option<Spanned<u32>>,
    pub idempotent_on_error: Option<bool>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_request_head: Option<Spanned<Size>>,
    pub max_headers: Option<Spanned<usize>>,
    pub max_request_body: Option<Spanned<Size>>,
    pub max_response_head: Option<Spanned<Size>>,
    pub http2_max_concurrent_streams: Option<Spanned<u32>>,
}

/// `[buffering]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferingFile {
    pub requests: Option<bool>,
    pub responses: Option<bool>,
    pub memory: Option<Spanned<Size>>,
    pub max_temp_file: Option<Spanned<Size>>,
    pub temp_dir: Option<Spanned<String>>,
}

/// `[discovery]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    pub min_ttl: Option<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
    pub nameservers: Option<Vec<Spanned<String>>>,
}

/// A size as written: a number of bytes, or a string with a unit
/// (`"64k"`, `"1m"`, `"1g"`, as nginx writes them).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

/// `[[group]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    pub name: Spanned<String>,
    pub balance: Option<Spanned<String>>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<Spanned<String>>,
    pub slow_start: Option<Spanned<String>>,
    pub upstream_keepalive: Option<Spanned<String>>,
    pub queue_timeout: Option<Spanned<String>>,
    pub max_queue: Option<Spanned<u32>>,
    pub queue_order: Option<Spanned<String>>,
    pub scrape: Option<bool>,
    pub scrape_interval: Option<Spanned<String>>,
    pub scrape_timeout: Option<Spanned<String>>,
    pub fall: Option<Spanned<u32>>,
    pub rise: Option<Spanned<u32>>,
    pub stale_after: Option<Spanned<u32>>,
    pub affinity: Option<Spanned<String>>,
    pub affinity_cookies: Option<Spanned<Vec<Spanned<String>>>>,
    pub affinity_insert_cookie: Option<Spanned<String>>,
    pub affinity_strict: Option<bool>,
    pub send_proxy_protocol: Option<Spanned<String>>,
    pub srv: Option<Spanned<String>>,
    pub srv_status_path: Option<Spanned<String>>,
    pub srv_status_kind: Option<Spanned<String>>,
    pub srv_max_workers: Option<Spanned<u32>>,
    #[serde(default, rename = "node")]
    pub nodes: Vec<Spanned<NodeFile>>,
}

/// `[[group.node]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub weight: Option<Spanned<u32>>,
    pub backup: Option<bool>,
    pub drain: Option<bool>,
    pub status_url: Option<Spanned<String>>,
    pub status_kind: Option<Spanned<String>>,
    pub max_workers: Option<Spanned<u32>>,
    pub max_conns: Option<Spanned<u32>>,
}

/// `[[route]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub group: Spanned<String>,
    pub retry_on_404: Option<bool>,
    pub primary: Option<Spanned<String>>,
    pub write_paths: Option<Vec<Spanned<String>>>,
    pub primary_fallback: Option<Spanned<bool>>,
    pub request_buffering: Option<bool>,
    pub response_buffering: Option<bool>,
    pub max_request_body: Option<Spanned<Size>>,
    pub https_redirect: Option<bool>,
    pub hsts_max_age: Option<Spanned<String>>,
    pub hsts_include_subdomains: Option<Spanned<bool>>,
}

// ---------------------------------------------------------------------------
// Validation.

/// Builds errors that point into the file being validated.
pub(crate) struct Checker<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

type Result<T> = std::result::Result<T, ConfigError>;

impl Checker<'_> {
    fn err(
        &self,
        span: Option<Range<usize>>,
        context: &str,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::at(self.path, self.text, span, context, Some(key), message)
    }

    /// An error about a spanned value.
    fn bad<T>(
        &self,
        value: &Spanned<T>,
        context: &str,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        self.err(Some(value.span()), context, key, message)
    }

    /// 1-based line of a span (for "already used on line N").
    fn line_of(&self, span: Range<usize>) -> usize {
        super::error::line_col(self.text, span.start).0
    }

    fn duration(
        &self,
        value: &Option<Spanned<String>>,
        default: Duration,
        context: &str,
        key: &str,
    ) -> Result<Duration> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v.get_ref()).map_err(|e| self.bad(v, context, key, e)),
        }
    }

    /// A duration that must be above zero.
    fn positive_duration(
        &self,
        value: &Option<Spanned<String>>,
        default: Duration,
        context: &str,
        key: &str,
    ) -> Result<Duration> {
        let d = self.duration(value, default, context, key)?;
        match value {
            Some(v) if d.is_zero() => Err(self.bad(v, context, key, "must be longer than 0s")),
            _ => Ok(d),
        }
    }

    /// A count that must be at least 1.
    fn at_least_one<T: Copy + PartialEq + From<u8>>(
        &self,
        value: &Option<Spanned<T>>,
        default: T,
        context: &str,
        key: &str,
    ) -> Result<T> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() == T::from(0) => {
                Err(self.bad(v, context, key, "must be at least 1"))
            }
            Some(v) => Ok(*v.get_ref()),
        }
    }

    fn address(&self, value: &Spanned<String>, context: &str, key: &str) -> Result<SocketAddr> {
        parse_address(value.get_ref()).map_err(|why| {
            self.bad(
                value,
                context,
                key,
                format!("{:?} is not a valid address: {why}", value.get_ref()),
            )
        })
    }

    fn cidrs(&self, values: &[Spanned<String>], context: &str, key: &str) -> Result<Vec<IpNet>> {
        values
            .iter()
            .map(|v| parse_cidr(v.get_ref()).map_err(|e| self.bad(v, context, key, e)))
            .collect()
    }

    /// A size in bytes (`65536`, `"64k"`, `"1m"`, `"1g"`).
    fn size(&self, value: &Spanned<Size>, context: &str, key: &str) -> Result<u64> {
        match value.get_ref() {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t).map_err(|e| self.bad(value, context, key, e)),
        }
    }

    fn name(&self, value: &Spanned<String>, context: &str, what: &str) -> Result<String> {
        check_name(value.get_ref())
            .map(|()| value.get_ref().clone())
            .map_err(|e| self.bad(value, context, "name", format!("{what} name {e}")))
    }
}

impl ConfigFile {
    /// Check every rule and fill in every default.
    pub(crate) fn into_model(self, cx: &Checker<'_>, hash: String) -> Result<Config> {
        let server = self.server.into_model(cx)?;
        let admin = self.admin.into_model(cx, &server)?;
        let access_log = self.access_log.into_model(cx)?;
        let timeouts = self.timeouts.into_model(cx)?;
        let retries = self.retries.into_model(cx)?;
        let limits = self.limits.into_model(cx)?;
        let buffering = self.buffering.into_model(cx)?;
        let discovery = self.discovery.into_model(cx)?;
        let protected_paths = protected_paths(cx, self.protected_paths)?;

        if self.groups.is_empty() {
            return Err(ConfigError::at(
                cx.path,
                cx.text,
                None,
                "",
                None,
                "no [[group]] defined: at least one group with one node is required",
            ));
        }
        let mut groups = Vec::with_capacity(self.groups.len());
        let mut seen: HashMap<String, Range<usize>> = HashMap::new();
        for group in self.groups {
            let span = group.span();
            let group = group.into_inner();
            let name = group.name.get_ref().clone();
            if let Some(first) = seen.get(&name) {
                return Err(cx.bad(
                    &group.name,
                    &format!("group {name:?}"),
                    "name",
                    format!(
                        "group name {name:?} is already used on line {}",
                        cx.line_of(first.clone())
                    ),
                ));
            }
            seen.insert(name, group.name.span());
            groups.push(group.into_model(cx, span, &discovery)?);
        }

        let mut routes = Vec::with_capacity(self.routes.len());
        for (index, route) in self.routes.into_iter().enumerate() {
            routes.push(route.into_inner().into_model(cx, index + 1, &groups)?);
        }

        let mut tls = Vec::with_capacity(self.tls.len());
        for (index, listener) in self.tls.into_iter().enumerate() {
            let listener =
                listener
                    .into_inner()
                    .into_model(cx, index + 1, &server, &admin, &tls)?;
            tls.push(listener);
        }

        let default_group = match self.default_group {
            None => groups[0].name.clone(),
            Some(name) => {
                if !groups.iter().any(|g| g.name == *name.get_ref()) {
                    return Err(cx.bad(
                        &name,
                        "",
                        "default_group",
                        format!("there is no group named {:?}", name.get_ref()),
                    ));
                }
                name.into_inner()
            }
        };

        Ok(Config {
            source: cx.path.to_path_buf(),
            hash,
            server,
            admin,
            access_log,
            timeouts,
            retries,
            limits,
            buffering,
            discovery,
            protected_paths,
            groups,
            routes,
            default_group,
            tls,
        })
    }
}

impl TlsFile {
    fn into_model(
        self,
        cx: &Checker<'_>,
        index: usize,
        server: &ServerSettings,
        admin: &AdminSettings,
        before: &[TlsListener],
    ) -> Result<TlsListener> {
        let context = format!("[[tls]] #{index}");
        let cxs = context.as_str();
        if self.listen.get_ref().is_empty() {
            return Err(cx.bad(
                &self.listen,
                cxs,
                "listen",
                "at least one address is required",
            ));
        }
        let mut listen: Vec<SocketAddr> = Vec::new();
        for item in self.listen.get_ref() {
            let addr = cx.address(item, cxs, "listen")?;
            let clash = if listen.contains(&addr) || before.iter().any(|t| t.listen.contains(&addr))
            {
                Some("already a TLS listener")
            } else if server.listen.contains(&addr) {
                Some("already a plain proxy listener ([server] listen)")
            } else if admin.listen == Some(addr) {
                Some("already the admin listener")
            } else {
                None
            };
            if let Some(why) = clash {
                return Err(cx.bad(item, cxs, "listen", format!("{addr} is {why}")));
            }
            listen.push(addr);
        }
        if self.certificates.get_ref().is_empty() {
            return Err(cx.err(
                Some(self.certificates.span()),
                cxs,
                "certificates",
                "no certificate: at least one is required, the first is the listener's default \
                 (e.g. certificates = [{ chain = \"/etc/ssl/site.pem\", key = \"/etc/ssl/site.key\" }])",
            ));
        }
        let base = cx.path.parent().unwrap_or(Path::new(""));
        let now = crate::reload::unix_now();
        let mut certificates = Vec::with_capacity(self.certificates.get_ref().len());
        for (n, c) in self.certificates.get_ref().iter().enumerate() {
            let ccx = format!("{context} certificate #{}", n + 1);
            for (v, key) in [(&c.chain, "chain"), (&c.key, "key")] {
                if v.get_ref().trim().is_empty() {
                    return Err(cx.bad(v, &ccx, key, "must name a PEM file"));
                }
            }
            let chain = base.join(c.chain.get_ref());
            let key = base.join(c.key.get_ref());
            let cert = crate::tls::Certificate::load(&chain, &key, now).map_err(|e| {
                let (v, k) = match e.part {
                    crate::tls::certificate::Part::Chain => (&c.chain, "chain"),
                    crate::tls::certificate::Part::Key => (&c.key, "key"),
                };
                cx.bad(v, &ccx, k, e.message)
            })?;
            certificates.push(cert);
        }
        let min_version = match &self.min_version {
            None => TlsVersion::Tls12,
            Some(v) => match v.get_ref().trim().to_ascii_lowercase().as_str() {
                "1.2" | "tlsv1.2" => TlsVersion::Tls12,
                "1.3" | "tlsv1.3" => TlsVersion::Tls13,
                "1.0" | "1.1" | "tlsv1" | "tlsv1.0" | "tlsv1.1" | "ssl3" | "sslv3" => {
                    return Err(cx.bad(
                        v,
                        cxs,
                        "min_version",
                        format!(
                            "{:?} is not offered: SSL 3, TLS 1.0 and 1.1 are broken (RFC 8996); write \"1.2\" or \"1.3\"",
                            v.get_ref()
                        ),
                    ))
                }
                _ => {
                    return Err(cx.bad(
                        v,
                        cxs,
                        "min_version",
                        format!("{:?} is not a TLS version: write \"1.2\" or \"1.3\"", v.get_ref()),
                    ))
                }
            },
        };
        let session_cache = match &self.session_cache {
            None => DEFAULT_TLS_SESSION_CACHE,
            Some(v) if *v.get_ref() > 1_000_000 => {
                return Err(cx.bad(v, cxs, "session_cache", "must be at most 1000000"));
            }
            Some(v) => *v.get_ref(),
        };
        Ok(TlsListener {
            listen,
            certificates,
            min_version,
            http2: self.http2.unwrap_or(true),
            session_tickets: self.session_tickets.unwrap_or(true),
            session_cache,
        })
    }
}

impl ServerFile {
    fn into_model(self, cx: &Checker<'_>) -> Result<ServerSettings> {
        const CX: &str = "[server]";
        let listen = match &self.listen {
            None => vec![parse_address(DEFAULT_LISTEN).map_err(|e| cx.err(None, CX, "listen", e))?],
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(cx.bad(list, CX, "listen", "at least one listener is required"));
                }
                let mut out: Vec<SocketAddr> = Vec::new();
                for item in list.get_ref() {
                    let addr = cx.address(item, CX, "listen")?;
                    if out.contains(&addr) {
                        return Err(cx.bad(item, CX, "listen", format!("{addr} is listed twice")));
                    }
                    out.push(addr);
                }
                out
            }
        };
        let threads = cx.at_least_one(&self.threads, DEFAULT_THREADS, CX, "threads")?;
        let cpu_affinity = match &self.cpu_affinity {
            None => CpuAffinity::Off,
            Some(v) => {
                parse_cpu_affinity(v.get_ref()).map_err(|e| cx.bad(v, CX, "cpu_affinity", e))?
            }
        };
        let grace_period =
            cx.duration(&self.grace_period, DEFAULT_GRACE_PERIOD, CX, "grace_period")?;
        let log_level = match self.log_level {
            None => DEFAULT_LOG_LEVEL.to_owned(),
            Some(v) if v.get_ref().trim().is_empty() => {
                return Err(cx.bad(&v, CX, "log_level", "must not be empty (e.g. \"info\")"));
            }
            Some(v) => v.into_inner().trim().to_owned(),
        };
        let log_format = match &self.log_format {
            None => LogFormat::Text,
            Some(v) => match v.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(cx.bad(
                        v,
                        CX,
                        "log_format",
                        format!("{other:?} is not a log format: write \"text\" or \"json\""),
                    ))
                }
            },
        };
        let pid_file = self
            .pid_file
            .map(Spanned::into_inner)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let upgrade_sock = match self.upgrade_sock {
            None => PathBuf::from(DEFAULT_UPGRADE_SOCK),
            Some(v) if v.get_ref().is_empty() => {
                return Err(cx.bad(&v, CX, "upgrade_sock", "must not be empty"));
            }
            Some(v) => PathBuf::from(v.into_inner()),
        };
        let trusted_proxies = match &self.trusted_proxies {
            None => Vec::new(),
            Some(list) => cx.cidrs(list, CX, "trusted_proxies")?,
        };
        let proxy_protocol_from = match &self.proxy_protocol_from {
            None => Vec::new(),
            Some(list) => cx.cidrs(list, CX, "proxy_protocol_from")?,
        };
        let state_file = self
            .state_file
            .map(Spanned::into_inner)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Ok(ServerSettings {
            h2c: self.h2c.unwrap_or(true),
            state_file,
            listen,
            threads,
            cpu_affinity,
            grace_period,
            log_level,
            log_format,
            pid_file,
            upgrade_sock,
            trusted_proxies,
            proxy_protocol_from,
        })
    }
}

impl AdminFile {
    fn into_model(self, cx: &Checker<'_>, server: &ServerSettings) -> Result<AdminSettings> {
        const CX: &str = "[admin]";
        let listen = match (self.enabled, &self.listen) {
            (Some(false), _) => None,
            (_, None) => Some(
                parse_address(DEFAULT_ADMIN_LISTEN).map_err(|e| cx.err(None, CX, "listen", e))?,
            ),
            (_, Some(v)) if v.get_ref().is_empty() => None,
            (_, Some(v)) => {
                let addr = cx.address(v, CX, "listen")?;
                if server.listen.contains(&addr) {
                    return Err(cx.bad(
                        v,
                        CX,
                        "listen",
                        format!("{addr} is already a proxy listener ([server] listen)"),
                    ));
                }
                Some(addr)
            }
        };
        let allow = match &self.allow {
            None => DEFAULT_ADMIN_ALLOW
                .iter()
                .map(|s| parse_cidr(s).map_err(|e| cx.err(None, CX, "allow", e)))
                .collect::<Result<_>>()?,
            Some(list) => cx.cidrs(list, CX, "allow")?,
        };
        let token_file = self
            .token_file
            .map(Spanned::into_inner)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Ok(AdminSettings {
            listen,
            allow,
            token_file,
        })
    }
}

impl AccessLogFile {
    fn into_model(self, cx: &Checker<'_>) -> Result<AccessLog> {
        let Some(target) = self.target else {
            return Ok(AccessLog::Off);
        };
        Ok(match target.get_ref().as_str() {
            "off" => AccessLog::Off,
            "stdout" => AccessLog::Stdout,
            "" => {
                return Err(cx.bad(
                    &target,
                    "[access_log]",
                    "target",
                    "must not be empty: write \"off\", \"stdout\" or a file path",
                ))
            }
            path => AccessLog::File(PathBuf::from(path)),
        })
    }
}

impl TimeoutsFile {
    fn into_model(self, cx: &Checker<'_>) -> Result<Timeouts> {
        const CX: &str = "[timeouts]";
        let t =
            |v: &Option<Spanned<String>>, default, key| cx.positive_duration(v, default, CX, key);
        Ok(Timeouts {
            connect: t(&self.connect, DEFAULT_CONNECT_TIMEOUT, "connect")?,
            read: t(&self.read, DEFAULT_READ_TIMEOUT, "read")?,
            write: t(&self.write, DEFAULT_WRITE_TIMEOUT, "write")?,
            idle: t(&self.idle, DEFAULT_IDLE_TIMEOUT, "idle")?,
            client_read: t(
                &self.client_read,
                DEFAULT_CLIENT_READ_TIMEOUT,
                "client_read",
            )?,
            client_write: t(
                &self.client_write,
                DEFAULT_CLIENT_WRITE_TIMEOUT,
                "client_write",
            )?,
            client_keepalive: t(
                &self.client_keepalive,
                DEFAULT_CLIENT_KEEPALIVE,
                "client_keepalive",
            )?,
        })
    }
}

impl LimitsFile {
    fn into_model(self, cx: &Checker<'_>) -> Result<Limits> {
        const CX: &str = "[limits]";
        let head = |v: &Option<Spanned<Size>>, default: u64, key: &str| -> Result<usize> {
            let n = match v {
                None => default,
                Some(v) => {
                    let n = cx.size(v, CX, key)?;
                    if !(1024..=1024 * 1024).contains(&n) {
                        return Err(cx.bad(v, CX, key, "must be between 1k and 1m"));
                    }
                    n
                }
            };
            Ok(n as usize)
        };
        let max_headers = match &self.max_headers {
            None => DEFAULT_MAX_HEADERS,
            Some(v) if (1..=10_000).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => return Err(cx.bad(v, CX, "max_headers", "must be between 1 and 10000")),
        };
        Ok(Limits {
            max_request_head: head(
                &self.max_request_head,
                DEFAULT_MAX_REQUEST_HEAD,
                "max_request_head",
            )?,
            max_headers,
            max_request_body: match &self.max_request_body {
                None => DEFAULT_MAX_REQUEST_BODY,
                Some(v) => cx.size(v, CX, "max_request_body")?,
            },
            max_response_head: head(
                &self.max_response_head,
                DEFAULT_MAX_RESPONSE_HEAD,
                "max_response_head",
            )?,
            http2_max_concurrent_streams: match &self.http2_max_concurrent_streams {
                None => DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
                Some(v) if (1..=1000).contains(v.get_ref()) => *v.get_ref(),
                Some(v) => {
                    return Err(cx.bad(
                        v,
                        CX,
                        "http2_max_concurrent_streams",
                        "must be between 1 and 1000",
                    ))
                }
            },
        })
    }
}

impl BufferingFile {
    fn into_model(self, cx: &Checker<'_>) -> Result<Buffering> {
        const CX: &str = "[buffering]";
        let memory = match &self.memory {
            None => DEFAULT_BUFFER_MEMORY,
            Some(v) => {
                let n = cx.size(v, CX, "memory")?;
                if !(4096..=64 * 1024 * 1024).contains(&n) {
                    return Err(cx.bad(v, CX, "memory", "must be between 4k and 64m"));
                }
                n
            }
        };
        let temp_dir = match &self.temp_dir {
            None => std::env::temp_dir(),
            Some(v) if v.get_ref().is_empty() => {
                return Err(cx.bad(v, CX, "temp_dir", "must not be empty"));
            }
            Some(v) => {
                let dir = PathBuf::from(v.get_ref());
                if !dir.is_dir() {
                    return Err(cx.bad(
                        v,
                        CX,
                        "temp_dir",
                        format!("{:?} is not a directory", v.get_ref()),
                    ));
                }
                dir
            }
        };
        Ok(Buffering {
            requests: self.requests.unwrap_or(true),
            responses: self.responses.unwrap_or(true),
            memory: memory as usize,
            max_temp_file: match &self.max_temp_file {
                None => DEFAULT_MAX_TEMP_FILE,
                Some(v) => cx.size(v, CX, "max_temp_file")?,
            },
            temp_dir,
        })
    }
}

impl RetriesFile {
    fn into_model(self, cx: &Checker<'_>) -> Result<Retries> {
        Ok(Retries {
            tries: cx.at_least_one(&self.tries, DEFAULT_TRIES, "[retries]", "tries")?,
            idempotent_on_error: self.idempotent_on_error.unwrap_or(true),
        })
    }
}

impl DiscoveryFile {
    fn into_model(self, cx: &Checker<'_>) -> Result<Discovery> {
        const CX: &str = "[discovery]";
        let min_ttl = cx.positive_duration(&self.min_ttl, DEFAULT_DNS_MIN_TTL, CX, "min_ttl")?;
        let max_ttl = cx.positive_duration(&self.max_ttl, DEFAULT_DNS_MAX_TTL, CX, "max_ttl")?;
        if max_ttl < min_ttl {
            let at = self.max_ttl.as_ref().or(self.min_ttl.as_ref());
            return Err(cx.err(
                at.map(Spanned::span),
                CX,
                if self.max_ttl.is_some() {
                    "max_ttl"
                } else {
                    "min_ttl"
                },
                format!(
                    "max_ttl ({}) is shorter than min_ttl ({})",
                    humantime::format_duration(max_ttl),
                    humantime::format_duration(min_ttl)
                ),
            ));
        }
        let mut nameservers = Vec::new();
        for v in self.nameservers.iter().flatten() {
            let t = v.get_ref().trim();
            let addr = t
                .parse::<SocketAddr>()
                .or_else(|_| t.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    cx.bad(
                        v,
                        CX,
                        "nameservers",
                        format!("{t:?} is not an IP address with an optional port, e.g. \"10.0.0.2\" or \"127.0.0.1:5353\""),
                    )
                })?;
            nameservers.push(addr);
        }
        Ok(Discovery {
            min_ttl,
            max_ttl,
            nameservers,
        })
    }
}

fn protected_paths(cx: &Checker<'_>, value: Option<Vec<Spanned<String>>>) -> Result<Vec<String>> {
    let Some(list) = value else {
        return Ok(DEFAULT_PROTECTED_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect());
    };
    let mut out: Vec<String> = Vec::new();
    for item in list {
        let path = normalize_protected_path(item.get_ref())
            .map_err(|e| cx.bad(&item, "", "protected_paths", e))?;
        if !out.contains(&path) {
            out.push(path);
        }
    }
    Ok(out)
}

impl GroupFile {
    fn into_model(
        self,
        cx: &Checker<'_>,
        header: Range<usize>,
        discovery: &Discovery,
    ) -> Result<GroupConfig> {
        let context = format!("group {:?}", self.name.get_ref());
        let cxs = context.as_str();
        let name = cx.name(&self.name, cxs, "group")?;

        let balance = match &self.balance {
            None => BalanceMethod::DEFAULT,
            Some(v) => parse_balance(v.get_ref()).map_err(|e| cx.bad(v, cxs, "balance", e))?,
        };
        let max_fails = self.max_fails.unwrap_or(DEFAULT_MAX_FAILS);
        let fail_timeout = cx.positive_duration(
            &self.fail_timeout,
            DEFAULT_FAIL_TIMEOUT,
            cxs,
            "fail_timeout",
        )?;
        let slow_start = cx.duration(&self.slow_start, DEFAULT_SLOW_START, cxs, "slow_start")?;
        let upstream_keepalive = match &self.upstream_keepalive {
            None => UpstreamKeepalive::Auto,
            Some(v) => parse_upstream_keepalive(v.get_ref())
                .map_err(|e| cx.bad(v, cxs, "upstream_keepalive", e))?,
        };
        // None: the connect timeout (HAProxy's `timeout queue` default).
        let queue_timeout = match &self.queue_timeout {
            None => None,
            Some(_) => Some(cx.positive_duration(
                &self.queue_timeout,
                Duration::ZERO,
                cxs,
                "queue_timeout",
            )?),
        };
        let max_queue = self.max_queue.as_ref().map_or(0, |v| *v.get_ref());
        let queue_order = match &self.queue_order {
            None => QueueOrder::Adaptive,
            Some(v) => {
                parse_queue_order(v.get_ref()).map_err(|e| cx.bad(v, cxs, "queue_order", e))?
            }
        };

        let interval = cx.positive_duration(
            &self.scrape_interval,
            DEFAULT_SCRAPE_INTERVAL,
            cxs,
            "scrape_interval",
        )?;
        let timeout = cx.positive_duration(
            &self.scrape_timeout,
            DEFAULT_SCRAPE_TIMEOUT.min(interval),
            cxs,
            "scrape_timeout",
        )?;
        if let Some(v) = &self.scrape_timeout {
            if timeout > interval {
                return Err(cx.bad(
                    v,
                    cxs,
                    "scrape_timeout",
                    format!(
                        "{} is longer than scrape_interval ({}): a scrape must end before the next one starts",
                        humantime::format_duration(timeout),
                        humantime::format_duration(interval)
                    ),
                ));
            }
        }
        let scrape = ScrapeSettings {
            enabled: self.scrape.unwrap_or(true),
            interval,
            timeout,
            fall: cx.at_least_one(&self.fall, DEFAULT_FALL, cxs, "fall")?,
            rise: cx.at_least_one(&self.rise, DEFAULT_RISE, cxs, "rise")?,
            stale_after: cx.at_least_one(
                &self.stale_after,
                DEFAULT_STALE_AFTER,
                cxs,
                "stale_after",
            )?,
        };

        let affinity = affinity(cx, cxs, &self)?;
        let srv = srv_nodes(cx, cxs, &self)?;

        if self.nodes.is_empty() && srv.is_none() {
            return Err(cx.err(
                Some(header),
                cxs,
                "node",
                "the group has no nodes: add at least one [[group.node]] after it (or `srv`)",
            ));
        }
        let mut nodes: Vec<NodeConfig> = Vec::with_capacity(self.nodes.len());
        let mut seen: HashMap<String, Range<usize>> = HashMap::new();
        for node in self.nodes {
            let node = node.into_inner();
            let node_name = node.name.get_ref().clone();
            if let Some(first) = seen.get(&node_name) {
                return Err(cx.bad(
                    &node.name,
                    &format!("{context} node {node_name:?}"),
                    "name",
                    format!(
                        "node name {node_name:?} is already used in this group on line {}",
                        cx.line_of(first.clone())
                    ),
                ));
            }
            seen.insert(node_name, node.name.span());
            nodes.push(node.into_model(cx, &context, discovery)?);
        }
        if srv.is_none() && nodes.iter().all(|n| n.weight == 0) {
            return Err(cx.err(
                Some(header),
                cxs,
                "weight",
                "every node of the group has weight 0: at least one needs a weight above 0",
            ));
        }
        let send_proxy_protocol = match &self.send_proxy_protocol {
            None => None,
            Some(v) => match v.get_ref().as_str() {
                "off" => None,
                "v1" => Some(ProxyVersion::V1),
                "v2" => Some(ProxyVersion::V2),
                other => {
                    return Err(cx.bad(
                        v,
                        cxs,
                        "send_proxy_protocol",
                        format!("{other:?} is not a PROXY protocol version: write \"v1\", \"v2\" or \"off\""),
                    ))
                }
            },
        };

        Ok(GroupConfig {
            name,
            balance,
            nodes,
            max_fails,
            fail_timeout,
            scrape,
            slow_start,
            upstream_keepalive,
            queue_timeout,
            max_queue,
            queue_order,
            affinity,
            send_proxy_protocol,
            srv,
        })
    }
}

/// `srv` and the `srv_*` keys that set up the nodes found through it (which
/// are refused without `srv`).
fn srv_nodes(cx: &Checker<'_>, cxs: &str, g: &GroupFile) -> Result<Option<SrvNodes>> {
    let Some(v) = &g.srv else {
        let stray = [
            (
                "srv_status_path",
                g.srv_status_path.as_ref().map(Spanned::span),
            ),
            (
                "srv_status_kind",
                g.srv_status_kind.as_ref().map(Spanned::span),
            ),
            (
                "srv_max_workers",
                g.srv_max_workers.as_ref().map(Spanned::span),
            ),
        ];
        if let Some((key, Some(span))) = stray.into_iter().find(|(_, s)| s.is_some()) {
            return Err(cx.err(
                Some(span),
                cxs,
                key,
                "sets up the nodes of an SRV name: set `srv` too (or remove it)",
            ));
        }
        return Ok(None);
    };
    let name = check_host_name(v.get_ref().trim().trim_end_matches('.'))
        .map(|()| v.get_ref().trim().to_owned())
        .map_err(|e| cx.bad(v, cxs, "srv", e))?;
    let status_path = match &g.srv_status_path {
        None => DEFAULT_STATUS_PATH.to_owned(),
        Some(p) => {
            let text = p.get_ref().trim();
            let valid = text.starts_with('/')
                && text.parse::<http::uri::PathAndQuery>().is_ok()
                && !text.contains('#');
            if !valid {
                return Err(cx.bad(
                    p,
                    cxs,
                    "srv_status_path",
                    format!("{text:?} is not a path: write it as in a URL, e.g. \"/nginx_status\""),
                ));
            }
            text.to_owned()
        }
    };
    let status_kind = match &g.srv_status_kind {
        None => StatusKind::Auto,
        Some(k) => {
            parse_status_kind(k.get_ref()).map_err(|e| cx.bad(k, cxs, "srv_status_kind", e))?
        }
    };
    let max_workers = match &g.srv_max_workers {
        None => None,
        Some(w) if *w.get_ref() == 0 => {
            return Err(cx.bad(
                w,
                cxs,
                "srv_max_workers",
                "must be at least 1 (or left out)",
            ))
        }
        Some(w) => Some(*w.get_ref()),
    };
    Ok(Some(SrvNodes {
        name,
        status_path,
        status_kind,
        max_workers,
    }))
}

impl NodeFile {
    fn into_model(
        self,
        cx: &Checker<'_>,
        group_context: &str,
        discovery: &Discovery,
    ) -> Result<NodeConfig> {
        let context = format!("{group_context} node {:?}", self.name.get_ref());
        let cxs = context.as_str();
        let name = cx.name(&self.name, cxs, "node")?;
        // A host name is re-resolved by `crate::discovery`. With name servers
        // of its own, the system's resolver may not know the name: it is
        // only checked here and the node serves once it has resolved.
        let host = node_host_name(self.address.get_ref())
            .map_err(|why| {
                cx.bad(
                    &self.address,
                    cxs,
                    "address",
                    format!("{:?} is not a valid address: {why}", self.address.get_ref()),
                )
            })?
            .map(|(h, _)| h.to_owned());
        let unresolved = match node_host_name(self.address.get_ref()) {
            Ok(Some((_, port))) if !discovery.nameservers.is_empty() => {
                Some(SocketAddr::from(([0, 0, 0, 0], port)))
            }
            _ => None,
        };
        let address = match unresolved {
            Some(a) => a,
            None => cx.address(&self.address, cxs, "address")?,
        };
        let weight = match &self.weight {
            None => DEFAULT_WEIGHT,
            Some(w) if *w.get_ref() > MAX_WEIGHT => {
                return Err(cx.bad(w, cxs, "weight", format!("must be at most {MAX_WEIGHT}")));
            }
            Some(w) => *w.get_ref(),
        };
        let status = match &self.status_url {
            None if unresolved.is_some() => StatusUrl {
                url: format!(
                    "http://{}{DEFAULT_STATUS_PATH}",
                    self.address.get_ref().trim()
                ),
                address,
                host: self.address.get_ref().trim().to_owned(),
                path_and_query: DEFAULT_STATUS_PATH.to_owned(),
            },
            None => {
                let url = format!(
                    "http://{}{DEFAULT_STATUS_PATH}",
                    self.address.get_ref().trim()
                );
                let mut status =
                    parse_status_url(&url).map_err(|e| cx.bad(&self.address, cxs, "address", e))?;
                // The same lookup as the node's own (a name may have several
                // addresses): the status page follows the node.
                status.address = address;
                status
            }
            Some(v) => {
                parse_status_url(v.get_ref()).map_err(|e| cx.bad(v, cxs, "status_url", e))?
            }
        };
        let status_kind = match &self.status_kind {
            None => StatusKind::Auto,
            Some(v) => {
                parse_status_kind(v.get_ref()).map_err(|e| cx.bad(v, cxs, "status_kind", e))?
            }
        };
        let max_workers = match &self.max_workers {
            None => None,
            Some(v) if *v.get_ref() == 0 => {
                return Err(cx.bad(v, cxs, "max_workers", "must be at least 1 (or left out)"));
            }
            Some(v) => Some(*v.get_ref()),
        };
        let max_conns = match &self.max_conns {
            None => None,
            Some(v) if *v.get_ref() == 0 => {
                return Err(cx.bad(v, cxs, "max_conns", "must be at least 1 (or left out)"));
            }
            Some(v) => Some(*v.get_ref()),
        };
        Ok(NodeConfig {
            name,
            address,
            host,
            weight,
            backup: self.backup.unwrap_or(false),
            drain: self.drain.unwrap_or(false),
            status,
            status_kind,
            max_workers,
            max_conns,
        })
    }
}

impl RouteFile {
    fn into_model(
        self,
        cx: &Checker<'_>,
        index: usize,
        groups: &[GroupConfig],
    ) -> Result<RouteConfig> {
        let context = format!("route #{index}");
        let cxs = context.as_str();
        let host = match &self.host {
            None => None,
            Some(v) => {
                Some(normalize_route_host(v.get_ref()).map_err(|e| cx.bad(v, cxs, "host", e))?)
            }
        };
        let path_prefix = match &self.path {
            None => "/".to_owned(),
            Some(v) if !v.get_ref().starts_with('/') => {
                return Err(cx.bad(
                    v,
                    cxs,
                    "path",
                    format!("{:?} must start with \"/\"", v.get_ref()),
                ));
            }
            Some(v) => v.get_ref().clone(),
        };
        let Some(group) = groups.iter().find(|g| g.name == *self.group.get_ref()) else {
            return Err(cx.bad(
                &self.group,
                cxs,
                "group",
                format!("there is no group named {:?}", self.group.get_ref()),
            ));
        };
        let primary = match &self.primary {
            None => None,
            Some(v) if !group.nodes.iter().any(|n| n.name == *v.get_ref()) => {
                return Err(cx.bad(
                    v,
                    cxs,
                    "primary",
                    format!(
                        "there is no node named {:?} in group {:?}",
                        v.get_ref(),
                        group.name
                    ),
                ));
            }
            Some(v) => Some(v.get_ref().clone()),
        };
        let mut write_paths: Vec<String> = Vec::new();
        for item in self.write_paths.iter().flatten() {
            if !item.get_ref().starts_with('/') {
                return Err(cx.bad(
                    item,
                    cxs,
                    "write_paths",
                    format!("{:?} must start with \"/\"", item.get_ref()),
                ));
            }
            if primary.is_none() {
                return Err(cx.bad(
                    item,
                    cxs,
                    "write_paths",
                    "write paths go to the route's primary node: set `primary` too",
                ));
            }
            if !write_paths.contains(item.get_ref()) {
                write_paths.push(item.get_ref().clone());
            }
        }
        if let (Some(v), None) = (&self.primary_fallback, &primary) {
            return Err(cx.bad(
                v,
                cxs,
                "primary_fallback",
                "has no effect without `primary`: set the route's primary node",
            ));
        }
        let hsts = match (&self.hsts_max_age, &self.hsts_include_subdomains) {
            (None, Some(v)) => {
                return Err(cx.bad(
                    v,
                    cxs,
                    "hsts_include_subdomains",
                    "has no effect without `hsts_max_age` (e.g. hsts_max_age = \"365d\")",
                ))
            }
            (None, None) => None,
            (Some(_), sub) => Some(Hsts {
                max_age: cx.duration(&self.hsts_max_age, Duration::ZERO, cxs, "hsts_max_age")?,
                include_subdomains: sub.as_ref().is_some_and(|v| *v.get_ref()),
            }),
        };
        Ok(RouteConfig {
            host,
            path_prefix,
            group: self.group.into_inner(),
            retry_on_404: self.retry_on_404.unwrap_or(false),
            primary,
            write_paths,
            primary_fallback: self.primary_fallback.is_some_and(|v| *v.get_ref()),
            request_buffering: self.request_buffering,
            response_buffering: self.response_buffering,
            max_request_body: match &self.max_request_body {
                None => None,
                Some(v) => Some(cx.size(v, cxs, "max_request_body")?),
            },
            https_redirect: self.https_redirect.unwrap_or(false),
            hsts,
        })
    }
}

/// The `affinity*` keys of a group.
fn affinity(cx: &Checker<'_>, cxs: &str, group: &GroupFile) -> Result<Affinity> {
    let mode = match &group.affinity {
        None => AffinityMode::Off,
        Some(v) => parse_affinity_mode(v.get_ref()).map_err(|e| cx.bad(v, cxs, "affinity", e))?,
    };
    let cookies = match &group.affinity_cookies {
        None => DEFAULT_AFFINITY_COOKIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(cx.bad(
                    list,
                    cxs,
                    "affinity_cookies",
                    "at least one cookie name is required (e.g. [\"PHPSESSID\"])",
                ));
            }
            let mut out: Vec<String> = Vec::new();
            for item in list.get_ref() {
                check_cookie_name(item.get_ref())
                    .map_err(|e| cx.bad(item, cxs, "affinity_cookies", e))?;
                if !out.contains(item.get_ref()) {
                    out.push(item.get_ref().clone());
                }
            }
            out
        }
    };
    let insert_cookie = match &group.affinity_insert_cookie {
        None => DEFAULT_AFFINITY_INSERT_COOKIE.to_owned(),
        Some(v) => {
            check_cookie_name(v.get_ref())
                .map_err(|e| cx.bad(v, cxs, "affinity_insert_cookie", e))?;
            v.get_ref().clone()
        }
    };
    Ok(Affinity {
        mode,
        cookies,
        insert_cookie,
        strict: group.affinity_strict.unwrap_or(false),
    })
}

// ---------------------------------------------------------------------------
// Value parsers: plain functions from text to value or a reason.

/// `"1s"`, `"250ms"`, `"1m30s"`, ... (humantime syntax).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        // humantime lists every unit it knows; the examples say enough.
        let why = e.to_string();
        let why = why.split(", supported units").next().unwrap_or_default();
        format!(
            "{text:?} is not a valid duration ({why}): write e.g. \"1s\", \"250ms\" or \"1m30s\""
        )
    })
}

/// A size with an optional unit: `"512"`, `"64k"`, `"1m"`, `"2g"` (powers
/// of 1024, as nginx reads them; `K`, `KiB`, `MB` and the like too).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let bad =
        || format!("{text:?} is not a valid size: write e.g. 65536, \"64k\", \"1m\" or \"1g\"");
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let shift = match t[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// `host:port` to a socket address; names are resolved now, first address.
pub fn parse_address(text: &str) -> std::result::Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = split_host_port(text)?;
    resolve(host, port)
}

/// The host name and port of a node `address` written with a name (`None`
/// for an IP address); an error for one that is neither.
pub fn node_host_name(text: &str) -> std::result::Result<Option<(&str, u16)>, String> {
    let text = text.trim();
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(None);
    }
    let (host, port) = split_host_port(text)?;
    if host.parse::<IpAddr>().is_ok() {
        return Ok(None);
    }
    check_host_name(host)?;
    Ok(Some((host, port)))
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`.
pub fn check_host_name(host: &str) -> std::result::Result<(), String> {
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("{host:?} is neither an IP address nor a host name"))
    }
}

/// Split `host:port` / `[v6]:port`, checking the port.
fn split_host_port(text: &str) -> std::result::Result<(&str, u16), String> {
    if text.is_empty() {
        return Err("it is empty".to_owned());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in IPv6 address".to_owned())?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| "no port: write host:port, e.g. \"[::1]:80\"".to_owned())?;
        (host, port)
    } else {
        match text.rsplit_once(':') {
            None => return Err(format!("no port: write host:port, e.g. \"{text}:80\"")),
            Some((host, _)) if host.contains(':') => {
                return Err(
                    "write IPv6 addresses in brackets with a port, e.g. \"[::1]:80\"".to_owned(),
                )
            }
            Some(pair) => pair,
        }
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    Ok((host, port))
}

/// Resolve `host` (an IP address or a DNS name) with `port`.
fn resolve(host: &str, port: u16) -> std::result::Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// The most CPUs a list may name (the kernel's default `CONFIG_NR_CPUS`
/// on x86-64 is 8192; `sched_setaffinity`'s usual set holds 1024).
const MAX_CPU: usize = 1023;

/// `"off"`, `"auto"`, or a CPU list as `taskset -c` and systemd's
/// `CPUAffinity=` take it: numbers and ranges, comma-separated
/// (`"0-3,6"`), in the order the workers take them.
pub fn parse_cpu_affinity(text: &str) -> std::result::Result<CpuAffinity, String> {
    match text.trim() {
        "off" => return Ok(CpuAffinity::Off),
        "auto" => return Ok(CpuAffinity::Auto),
        "" => {
            return Err("must not be empty: write \"off\", \"auto\" or CPUs such as \"0-3\"".into())
        }
        _ => {}
    }
    let cpu = |t: &str| -> std::result::Result<usize, String> {
        let t = t.trim();
        match t.parse::<usize>() {
            Ok(n) if n <= MAX_CPU => Ok(n),
            Ok(_) => Err(format!(
                "CPU {t} is past the last one a list may name ({MAX_CPU})"
            )),
            Err(_) => Err(format!(
                "{t:?} is not a CPU number: write \"off\", \"auto\" or CPUs such as \"0-3,6\""
            )),
        }
    };
    let mut cpus = Vec::new();
    for item in text.split(',') {
        match item.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (cpu(first)?, cpu(last)?);
                if first > last {
                    return Err(format!("the range {} runs backwards", item.trim()));
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(cpu(item)?),
        }
    }
    Ok(CpuAffinity::Cpus(cpus))
}

/// A network like `10.0.0.0/8`, or a bare IP taken as a single host.
pub fn parse_cidr(text: &str) -> std::result::Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{text:?} is not a valid network: write e.g. \"10.0.0.0/8\", \"::1/128\" or a single IP"
    ))
}

/// A status page URL: `http://host[:port]/path?query`.
pub fn parse_status_url(text: &str) -> std::result::Result<StatusUrl, String> {
    let text = text.trim();
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("https status URLs are not supported".to_owned()),
        Some(other) => {
            return Err(format!(
                "{text:?}: scheme {other:?} is not supported, write http://host:port/path"
            ))
        }
        None => {
            return Err(format!(
                "{text:?} is not an absolute URL, write http://host:port/path"
            ))
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?}: user names in status URLs are not supported"
        ));
    }
    let host = authority.host();
    // `Authority::port` hides a port that is out of range, so split by hand
    // (there is no user info, so the authority starts with the host).
    let port = match authority
        .as_str()
        .get(host.len()..)
        .and_then(|r| r.strip_prefix(':'))
    {
        None | Some("") => 80,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: port {port:?} is not a number from 1 to 65535"))?,
    };
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let address = resolve(bare_host, port).map_err(|e| format!("{text:?}: {e}"))?;
    let path_and_query = match uri.path_and_query().map(|pq| pq.as_str()) {
        None | Some("") => "/".to_owned(),
        Some(pq) if pq.starts_with('/') => pq.to_owned(),
        Some(pq) => format!("/{pq}"),
    };
    Ok(StatusUrl {
        url: text.to_owned(),
        address,
        host: authority.as_str().to_owned(),
        path_and_query,
    })
}

/// Group and node names: non-empty, `[A-Za-z0-9_.-]` (safe in metric labels
/// and URLs). The error completes "group name ...".
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(c) => Err(format!(
            "{name:?} contains {c:?}: use only letters, digits, '_', '.' and '-'"
        )),
        None => Ok(()),
    }
}

/// A method registered in `balance::METHODS`.
fn parse_balance(text: &str) -> std::result::Result<BalanceMethod, String> {
    BalanceMethod::named(text).ok_or_else(|| {
        format!(
            "unknown balance method {text:?}: expected {}",
            quoted_list(BalanceMethod::all().map(BalanceMethod::name))
        )
    })
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`: the known names of a registry,
/// for a message.
fn quoted_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn parse_upstream_keepalive(text: &str) -> std::result::Result<UpstreamKeepalive, String> {
    [
        UpstreamKeepalive::Auto,
        UpstreamKeepalive::On,
        UpstreamKeepalive::Off,
    ]
    .into_iter()
    .find(|m| m.as_str() == text)
    .ok_or_else(|| format!("unknown value {text:?}: expected \"auto\", \"on\" or \"off\""))
}

fn parse_queue_order(text: &str) -> std::result::Result<QueueOrder, String> {
    [QueueOrder::Adaptive, QueueOrder::Fifo]
        .into_iter()
        .find(|m| m.as_str() == text)
        .ok_or_else(|| format!("unknown value {text:?}: expected \"adaptive\" or \"fifo\""))
}

fn parse_affinity_mode(text: &str) -> std::result::Result<AffinityMode, String> {
    [
        AffinityMode::Off,
        AffinityMode::Cookie,
        AffinityMode::Insert,
    ]
    .into_iter()
    .find(|m| m.as_str() == text)
    .ok_or_else(|| {
        format!("unknown affinity mode {text:?}: expected \"off\", \"cookie\" or \"insert\"")
    })
}

/// A cookie name: an RFC 6265 token (visible ASCII except separators).
fn check_cookie_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("a cookie name must not be empty".to_owned());
    }
    match name
        .chars()
        .find(|c| !c.is_ascii_graphic() || "()<>@,;:\\\"/[]?={}".contains(*c))
    {
        Some(c) => Err(format!(
            "{name:?} is not a valid cookie name: it contains {c:?}"
        )),
        None => Ok(()),
    }
}

/// `"auto"` or a kind registered in `status::KINDS`.
fn parse_status_kind(text: &str) -> std::result::Result<StatusKind, String> {
    if text == StatusKind::Auto.name() {
        return Ok(StatusKind::Auto);
    }
    ServerKind::named(text)
        .map(StatusKind::Named)
        .ok_or_else(|| {
            let names = std::iter::once(StatusKind::Auto.name())
                .chain(crate::status::KINDS.iter().map(|k| k.name()));
            format!(
                "unknown status kind {text:?}: expected {}",
                quoted_list(names)
            )
        })
}

/// Lower case, port stripped, trailing dot removed; `*.` prefix kept.
fn normalize_route_host(text: &str) -> std::result::Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    let without_port = if lower.starts_with('[') {
        match lower.find(']') {
            Some(end) => &lower[..=end],
            None => return Err(format!("{text:?}: unclosed '[' in IPv6 address")),
        }
    } else {
        match lower.rsplit_once(':') {
            Some((host, port))
                if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) =>
            {
                host
            }
            _ => lower.as_str(),
        }
    };
    let host = without_port.trim_end_matches('.');
    let (wildcard, rest) = match host.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", host),
    };
    let bracketed_v6 = rest
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    let valid = bracketed_v6
        || (!rest.is_empty()
            && rest.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            }));
    if !valid || (bracketed_v6 && !wildcard.is_empty()) {
        return Err(format!(
            "{text:?} is not a valid host: write e.g. \"example.com\" or \"*.example.com\""
        ));
    }
    Ok(format!("{wildcard}{rest}"))
}

/// Lower case, no trailing slash, must start with `/` and not be just `/`.
fn normalize_protected_path(text: &str) -> std::result::Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?} must start with \"/\""));
    }
    let path = text.trim_end_matches('/').to_ascii_lowercase();
    if path.is_empty() {
        return Err("\"/\" would block every request".to_owned());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        let err = parse_duration("10 parsecs").unwrap_err();
        assert!(
            err.contains("\"10 parsecs\" is not a valid duration"),
            "{err}"
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("127.0.0.1:8001"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 8001)))
        );
        assert_eq!(parse_address(" [::1]:80 ").map(|a| a.port()), Ok(80));
        assert_eq!(parse_address("localhost:8001").map(|a| a.port()), Ok(8001));
        assert!(parse_address("10.0.0.1").unwrap_err().contains("no port"));
        assert!(parse_address("[::1]").unwrap_err().contains("no port"));
        assert!(parse_address("::1").unwrap_err().contains("brackets"));
        assert!(parse_address("10.0.0.1:http").unwrap_err().contains("port"));
        assert!(parse_address("10.0.0.1:70000")
            .unwrap_err()
            .contains("port"));
        assert!(parse_address("bad host!:80")
            .unwrap_err()
            .contains("neither"));
        assert!(parse_address("").is_err());
        assert!(parse_address(":80").is_err());
    }

    #[test]
    fn cpu_affinity_lists() {
        let cpus = |v: &[usize]| Ok(CpuAffinity::Cpus(v.to_vec()));
        assert_eq!(parse_cpu_affinity("off"), Ok(CpuAffinity::Off));
        assert_eq!(parse_cpu_affinity(" auto "), Ok(CpuAffinity::Auto));
        assert_eq!(parse_cpu_affinity("3"), cpus(&[3]));
        assert_eq!(parse_cpu_affinity("0-3, 6"), cpus(&[0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_affinity("5,1-2"), cpus(&[5, 1, 2]));
        assert_eq!(parse_cpu_affinity("1023"), cpus(&[1023]));
        for bad in [
            "", " ", "on", "0-", "-1", "3-1", "1024", "0,,1", "0-2-4", "0x1",
        ] {
            assert!(parse_cpu_affinity(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.0/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_cidr("10.1.2.3/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_cidr("10.0.0.1").map(|n| n.to_string()),
            Ok("10.0.0.1/32".into())
        );
        assert_eq!(
            parse_cidr("::1").map(|n| n.to_string()),
            Ok("::1/128".into())
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("ten").is_err());
    }

    #[test]
    fn status_urls() {
        let s = parse_status_url("http://127.0.0.1:8001/server-status?auto").unwrap();
        assert_eq!(s.address, SocketAddr::from(([127, 0, 0, 1], 8001)));
        assert_eq!(s.host, "127.0.0.1:8001");
        assert_eq!(s.path_and_query, "/server-status?auto");
        let s = parse_status_url("http://127.0.0.1").unwrap();
        assert_eq!(s.address.port(), 80);
        assert_eq!(s.host, "127.0.0.1");
        assert_eq!(s.path_and_query, "/");
        let s = parse_status_url("http://[::1]:81/nginx_status").unwrap();
        assert_eq!(s.address, "[::1]:81".parse().unwrap());
        assert_eq!(s.host, "[::1]:81");
        assert_eq!(
            parse_status_url("https://127.0.0.1/server-status").unwrap_err(),
            "https status URLs are not supported"
        );
        assert!(parse_status_url("/server-status").is_err());
        assert!(parse_status_url("ftp://127.0.0.1/").is_err());
        assert!(parse_status_url("http://u:p@127.0.0.1/").is_err());
        assert!(parse_status_url("http://not a url/").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("web-1.eu_west").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("web 1").is_err());
        assert!(check_name("wéb").is_err());
        assert!(check_name("a/b").is_err());
    }

    #[test]
    fn balance_and_status_kind() {
        for name in ["round_robin", "busyness", "least_inflight"] {
            assert_eq!(parse_balance(name).map(|m| m.name()), Ok(name));
        }
        assert!(parse_balance("random").is_err());
        assert_eq!(
            parse_status_kind("nginx").map(StatusKind::name),
            Ok("nginx")
        );
        assert_eq!(parse_status_kind("auto"), Ok(StatusKind::Auto));
        let err = parse_status_kind("iis").unwrap_err();
        assert!(
            err.starts_with(
                "unknown status kind \"iis\": expected \"auto\", \"apache\", \"nginx\""
            ),
            "{err}"
        );
    }

    #[test]
    fn registry_names_are_listed() {
        assert_eq!(quoted_list(["a"].into_iter()), "\"a\"");
        assert_eq!(quoted_list(["a", "b"].into_iter()), "\"a\" or \"b\"");
        assert_eq!(
            quoted_list(["a", "b", "c"].into_iter()),
            "\"a\", \"b\" or \"c\""
        );
    }

    #[test]
    fn route_hosts() {
        let n = |s| normalize_route_host(s);
        assert_eq!(n("Example.COM"), Ok("example.com".into()));
        assert_eq!(n("example.com:8080"), Ok("example.com".into()));
        assert_eq!(n("example.com."), Ok("example.com".into()));
        assert_eq!(n("*.Example.com"), Ok("*.example.com".into()));
        assert_eq!(n("[::1]:8080"), Ok("[::1]".into()));
        assert_eq!(n("10.0.0.1:80"), Ok("10.0.0.1".into()));
        assert!(n("").is_err());
        assert!(n("exa mple.com").is_err());
        assert!(n("a.*.com").is_err());
        assert!(n("*").is_err());
    }

    #[test]
    fn protected_path_normalization() {
        let n = |s| normalize_protected_path(s);
        assert_eq!(n("/Server-Status/"), Ok("/server-status".into()));
        assert_eq!(n("/a//"), Ok("/a".into()));
        assert!(n("server-status").is_err());
        assert!(n("/").is_err());
    }
}
