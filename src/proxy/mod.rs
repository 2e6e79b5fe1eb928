//! The proxy: pingora's `ProxyHttp` phases for visitor requests.
//!
//! Each phase delegates to the room that owns the concern: `guard` refuses
//! node status pages, the cluster's router picks the group, the group's
//! balancer picks the node, `forwarded` writes the X-Forwarded-* headers.
//! Per-request state lives in `RequestCtx`; the cluster state a request
//! started with stays with it to the end, so a reload never changes the
//! rules under a request in flight.

mod choose;
use choose::{cookie_value, pin_cookie, primary_down_body, session_key, write_target, SessionKey};
pub mod forwarded;
pub mod guard;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyWarnLogContext};
use pingora::{Error, ErrorSource, ErrorType};

use crate::access_log::{AccessLog, Entry};
use crate::cluster::node::InflightGuard;
use crate::cluster::{Cluster, ClusterState};
use crate::config::{AffinityMode, UpstreamKeepalive};
use crate::metrics::{code_class, Metrics};

/// The visitor-facing proxy.
pub struct Proxy {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
    active: Arc<ActiveRequests>,
}

/// Requests being handled right now, across the whole proxy (used to end a
/// graceful shutdown as soon as the last one is done).
#[derive(Debug, Default)]
pub struct ActiveRequests(AtomicU64);

impl ActiveRequests {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct ActiveGuard(Arc<ActiveRequests>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the last attempt on a node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Timeout,
}

/// Per-request state.
pub struct RequestCtx {
    _active: ActiveGuard,
    started: Instant,
    state: Option<Arc<ClusterState>>,
    group: usize,
    /// Indices of nodes tried so far (in order).
    tried: Vec<usize>,
    /// The node of the current attempt, counted in flight while held.
    current: Option<InflightGuard>,
    upstream_started: Option<Instant>,
    upstream_time: Option<Duration>,
    last_failure: Option<Failure>,
    /// Index of the matched route in `Config::routes`, if any.
    route: Option<usize>,
    /// A write with a primary node: its index in the group.
    primary: Option<usize>,
    /// The session this request belongs to, if the group keeps sessions.
    session: Option<SessionKey>,
    /// `Set-Cookie` value to add to the response (`insert` mode).
    set_cookie: Option<String>,
    /// `cookie` mode: the pin cookie (`affinity_insert_cookie`) naming the
    /// node that created the session, when that is not its hash node.
    pin: Option<String>,
    /// A 404 from a node may be retried on another node (route setting,
    /// GET/HEAD, not a primary write).
    retry_on_404: bool,
    /// 404 answers retried so far.
    retried_404: u32,
    /// The error now on its way from `upstream_response_filter` to
    /// `error_while_proxy` is our own 404 retry.
    retrying_404: bool,
    /// Body of a local error answer, when more specific than the code's.
    error_body: Option<String>,
}

impl RequestCtx {
    fn group_name(&self) -> &str {
        self.state
            .as_ref()
            .and_then(|s| s.groups.get(self.group))
            .map_or("-", |g| g.name())
    }

    fn node_name(&self) -> &str {
        match (&self.state, self.tried.last(), &self.current) {
            (Some(s), Some(&i), Some(_)) => s
                .groups
                .get(self.group)
                .and_then(|g| g.nodes.get(i))
                .map_or("-", |n| n.config.name.as_str()),
            _ => "-",
        }
    }
}

impl Proxy {
    pub fn new(
        cluster: Arc<Cluster>,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
        active: Arc<ActiveRequests>,
    ) -> Proxy {
        Proxy {
            cluster,
            metrics,
            access_log,
            active,
        }
    }

    fn tries_left(&self, ctx: &RequestCtx) -> bool {
        let tries = ctx.state.as_ref().map_or(1, |s| s.config.retries.tries);
        (ctx.tried.len() as u32) < tries
    }

    /// Count a failed attempt against the current node.
    fn node_failed(&self, ctx: &mut RequestCtx, failure: Failure, e: &Error) {
        ctx.last_failure = Some(failure);
        let (Some(state), Some(&i)) = (&ctx.state, ctx.tried.last()) else {
            return;
        };
        let Some(group) = state.groups.get(ctx.group) else {
            return;
        };
        if let Some(node) = group.nodes.get(i) {
            node.live.record_failure(&group.config, &e.to_string());
            if failure == Failure::Connect {
                self.metrics
                    .connect_failures
                    .with_label_values(&[group.name(), node.config.name.as_str()])
                    .inc();
            }
        }
        // The next attempt (if any) is counted on its own node.
        ctx.current = None;
    }
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// Write a short plain-text response and finish the request.
async fn respond_plain(session: &mut Session, code: u16, body: impl Into<Bytes>) -> Result<()> {
    let body: Bytes = body.into();
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

fn plain_body(code: u16) -> &'static str {
    match code {
        404 => "404 Not Found\n",
        403 => "403 Forbidden\n",
        502 => "502 Bad Gateway: no node of this site could be reached\n",
        503 => "503 Service Unavailable\n",
        504 => "504 Gateway Timeout: the site's node did not answer in time\n",
        400 => "400 Bad Request\n",
        _ => "500 Internal Server Error\n",
    }
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.active.0.fetch_add(1, Ordering::Relaxed);
        RequestCtx {
            _active: ActiveGuard(Arc::clone(&self.active)),
            started: Instant::now(),
            state: None,
            group: 0,
            tried: Vec::new(),
            current: None,
            upstream_started: None,
            upstream_time: None,
            last_failure: None,
            route: None,
            primary: None,
            session: None,
            set_cookie: None,
            pin: None,
            retry_on_404: false,
            retried_404: 0,
            retrying_404: false,
            error_body: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let state = self.cluster.state();
        let t = state.config.timeouts;
        session.set_read_timeout(Some(t.client_read));
        session.set_write_timeout(Some(t.client_write));
        session.set_keepalive(Some(t.client_keepalive.as_secs().max(1)));
        ctx.state = Some(state);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(state) = ctx.state.clone() else {
            return Ok(false);
        };
        let req = session.req_header();
        let target = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path(), |pq| pq.as_str());
        if state.guard.is_protected(target.as_bytes()) {
            tracing::info!(
                client = ?client_ip(session),
                target,
                "refused a request for a node status page"
            );
            self.metrics.denied_status_paths.inc();
            respond_plain(session, 403, plain_body(403)).await?;
            return Ok(true);
        }
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host());
        let (group, route) = state.router.route_with_index(host, req.uri.path());
        ctx.group = group;
        ctx.route = route;
        let Some(group) = state.groups.get(ctx.group) else {
            return Ok(false);
        };
        let route = route.and_then(|i| state.config.routes.get(i));
        if let Some(route) = route {
            if let Some(primary) = write_target(route, group, session.req_header()) {
                let st = &group.stats;
                if group.node_available(primary, &[], Instant::now()) {
                    st.primary_request();
                    ctx.primary = Some(primary);
                } else if route.primary_fallback {
                    st.primary_fallback();
                } else {
                    st.primary_unavailable();
                    let name = &group.nodes[primary].config.name;
                    tracing::warn!(
                        group = group.name(),
                        node = name.as_str(),
                        "refused a write: the primary node is not usable"
                    );
                    let body = primary_down_body(name);
                    respond_plain(session, 503, body).await?;
                    return Ok(true);
                }
            }
            let method = &session.req_header().method;
            ctx.retry_on_404 = route.retry_on_404
                && ctx.primary.is_none()
                && (method == http::Method::GET || method == http::Method::HEAD);
        }
        if ctx.primary.is_none() {
            ctx.session = session_key(group, session.req_header());
            let a = &group.config.affinity;
            if a.mode == AffinityMode::Cookie {
                ctx.pin = cookie_value(session.req_header(), &a.insert_cookie).map(str::to_owned);
            }
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let state = ctx
            .state
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no cluster state"))?;
        let group = state
            .groups
            .get(ctx.group)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "routed to no group"))?;
        if !ctx.tried.is_empty() {
            self.metrics
                .retries
                .with_label_values(&[group.name()])
                .inc();
        }
        let picked = match self.choose(group, ctx) {
            Ok(picked) => picked,
            Err(body) => {
                ctx.error_body = Some(body);
                return Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "the request's node (session or primary) is not usable",
                ));
            }
        };
        let Some(index) = picked else {
            if ctx.retried_404 > 0 {
                // Every node that could be asked answered 404.
                return Err(Error::explain(
                    ErrorType::HTTPStatus(404),
                    "404 on every node tried",
                ));
            }
            let code = if ctx.last_failure == Some(Failure::Timeout) {
                504
            } else {
                502
            };
            self.metrics
                .no_node
                .with_label_values(&[group.name()])
                .inc();
            let why = if ctx.tried.is_empty() {
                format!(
                    "no usable node in group \"{}\" (all down, draining or weight 0)",
                    group.name()
                )
            } else {
                format!(
                    "no node of group \"{}\" left to try after {} attempt(s)",
                    group.name(),
                    ctx.tried.len()
                )
            };
            return Err(Error::explain(ErrorType::HTTPStatus(code), why));
        };
        let node = &group.nodes[index];
        ctx.tried.push(index);
        ctx.current = Some(node.live.begin_request());
        ctx.upstream_started = Some(Instant::now());
        let t = state.config.timeouts;
        let mut peer = HttpPeer::new(node.config.address, false, String::new());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // An idle pooled connection to an Apache prefork/worker node holds
        // one of its workers: ask the node to close after the response.
        let Some(state) = &ctx.state else {
            return Ok(());
        };
        let keepalive = state
            .groups
            .get(ctx.group)
            .map_or(UpstreamKeepalive::Auto, |g| g.config.upstream_keepalive);
        let close = match keepalive {
            UpstreamKeepalive::On => false,
            UpstreamKeepalive::Off => true,
            // On prefork/worker nodes an idle pooled connection holds a
            // worker other visitors need (it shows as `K`).
            UpstreamKeepalive::Auto => ctx
                .current
                .as_ref()
                .is_some_and(|g| g.node().worker_per_connection()),
        };
        if close {
            upstream_request.insert_header(header::CONNECTION, "close")?;
        }
        let Some(client) = client_ip(session) else {
            return Ok(());
        };
        let xff: Vec<&str> = session
            .req_header()
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let proto = session
            .req_header()
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok());
        let f = forwarded::forwarded(
            client,
            &xff,
            proto,
            &state.config.server.trusted_proxies,
            "http",
        );
        upstream_request.insert_header("x-forwarded-for", f.x_forwarded_for)?;
        upstream_request.insert_header("x-real-ip", f.x_real_ip)?;
        upstream_request.insert_header("x-forwarded-proto", f.x_forwarded_proto)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(node) = &ctx.current {
            node.node().record_success();
        }
        if let Some(t) = ctx.upstream_started {
            ctx.upstream_time = Some(t.elapsed());
        }
        let status = upstream_response.status.as_u16();
        if ctx.retry_on_404 {
            if let Some(group) = ctx.state.as_ref().and_then(|s| s.groups.get(ctx.group)) {
                if status == 404 && group.any_available(&ctx.tried, Instant::now()) {
                    // Nothing was sent to the client yet: an error here makes
                    // pingora ask `upstream_peer` for another node
                    // (`error_while_proxy` marks it retryable).
                    ctx.retried_404 += 1;
                    ctx.retrying_404 = true;
                    ctx.current = None;
                    group.stats.retried_404();
                    self.metrics
                        .retry_on_404
                        .with_label_values(&[group.name()])
                        .inc();
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(404),
                        "node answered 404, trying another node (retry_on_404)",
                    ));
                }
                if status != 404 && ctx.retried_404 > 0 {
                    group.stats.recovered_404();
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(cookie) = ctx.set_cookie.take() {
            upstream_response.append_header(header::SET_COOKIE, cookie)?;
        }
        if let Some(cookie) = pin_cookie(upstream_response, ctx) {
            upstream_response.append_header(header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        // A 404 retried on another node (retry_on_404) is expected content
        // sync lag, counted in webcluster_retry_on_404_total: not a warning.
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
            && ctx.retried_404 > 0
            && error.etype() == &ErrorType::HTTPStatus(404)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let failure = if is_timeout(&e) {
            Failure::Timeout
        } else {
            Failure::Connect
        };
        self.node_failed(ctx, failure, &e);
        // Nothing was sent yet: any method may go to another node.
        e.set_retry(self.tries_left(ctx));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("node {peer}"));
        if std::mem::take(&mut ctx.retrying_404) {
            // Our own retry of a 404 (see `upstream_response_filter`): not a
            // failure of the node, and nothing was sent to the client yet.
            e.set_retry(true);
            return e;
        }
        // A pooled connection the node had already closed says nothing about
        // the node's health; a timeout or a failure on a fresh one does.
        let stale_pooled = client_reused && !is_timeout(&e);
        if e.esource() == &ErrorSource::Upstream && !stale_pooled {
            let failure = if is_timeout(&e) {
                Failure::Timeout
            } else {
                Failure::Connect
            };
            self.node_failed(ctx, failure, &e);
        }
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        let policy = ctx
            .state
            .as_ref()
            .is_some_and(|s| s.config.retries.idempotent_on_error);
        if !replayable || !self.tries_left(ctx) {
            e.set_retry(false);
        } else if policy && e.esource() == &ErrorSource::Upstream {
            e.set_retry(true);
        } else {
            // A keep-alive connection the node had already closed: safe to
            // retry on a fresh connection.
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ if is_timeout(e) && e.esource() == &ErrorSource::Upstream => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => {
                    if ctx.last_failure == Some(Failure::Timeout) {
                        504
                    } else {
                        502
                    }
                }
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code >= 500 {
            tracing::warn!(
                group = ctx.group_name(),
                tried = ctx.tried.len(),
                "answered {code}: {e}"
            );
        }
        if code > 0 && session.response_written().is_none() {
            let sent = match ctx.error_body.take() {
                Some(body) => respond_plain(session, code, body).await,
                None => respond_plain(session, code, plain_body(code)).await,
            };
            if let Err(err) = sent {
                tracing::debug!("could not send the error response: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let group = ctx.group_name();
        let node = ctx.node_name();
        let elapsed = ctx.started.elapsed();
        if ctx.state.is_some() && status != 0 {
            self.metrics
                .requests
                .with_label_values(&[group, node, code_class(status)])
                .inc();
            if node != "-" {
                self.metrics
                    .request_duration
                    .with_label_values(&[group, node])
                    .observe(elapsed.as_secs_f64());
            }
        }
        if let Some(log) = &self.access_log {
            let req = session.req_header();
            let request_line = format!(
                "{} {} {:?}",
                req.method,
                req.uri.path_and_query().map_or("/", |p| p.as_str()),
                req.version
            );
            let client = client_ip(session).map_or_else(|| "-".to_string(), |ip| ip.to_string());
            let header_str = |name: header::HeaderName| {
                req.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
            };
            let node_id = if node == "-" {
                node.to_string()
            } else {
                format!("{group}/{node}")
            };
            log.log(&Entry {
                client: &client,
                request_line: &request_line,
                status,
                body_bytes: session.body_bytes_sent(),
                referer: header_str(header::REFERER),
                user_agent: header_str(header::USER_AGENT),
                node: &node_id,
                upstream_seconds: ctx.upstream_time.map(|d| d.as_secs_f64()),
                total_seconds: elapsed.as_secs_f64(),
            });
        }
        ctx.current = None;
    }
}
