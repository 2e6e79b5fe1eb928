//! The proxy: the path of a visitor's request, from its connection to a node
//! and back.
//!
//! A pingora [`ServerApp`] that runs each visitor connection as one loop of
//! HTTP/1.1 requests, on pingora's HTTP/1 sessions for the framing on both
//! sides. Each request goes through the same phases, each a method here:
//! `admit` (the `guard` refuses node status pages, the cluster's router
//! picks the group, `choose` the write or session target), `attempt` (pick a
//! node, get a connection from the `pool` or a new one, send the request as
//! `upstream` shapes it, read the response head) repeated while a retry is
//! allowed, `forward` (the response to the visitor, the connection back to
//! the pool, `tunnel` for a WebSocket), `fail` (a local 4xx/5xx from
//! `respond`) and `log`. Per-request state lives in [`RequestCtx`]; the
//! cluster state a request started with stays with it to the end, so a
//! reload never changes the rules under a request in flight.
//!
//! Why not pingora's own `HttpProxy`: measured on this machine, its
//! per-request machinery (two channels and a join per request, a task and a
//! lock-protected LRU per pooled connection, a boxed future per request)
//! cost about twice nginx's CPU per request; this loop on the same sessions
//! costs about 1.5 times (52-53 against 34-38 us, benches/README.md).

mod choose;
use choose::{cookie_value, pin_cookie, primary_down_body, session_key, write_target, SessionKey};
pub mod forwarded;
pub mod guard;
pub mod pool;
mod respond;
mod tunnel;
pub mod upstream;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::header;
use pingora::apps::ServerApp;
use pingora::http::ResponseHeader;
use pingora::protocols::http::v1::client::HttpSession as NodeSession;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access_log::{AccessLog, Entry};
use crate::cluster::group::Group;
use crate::cluster::node::InflightGuard;
use crate::cluster::{Cluster, ClusterState};
use crate::config::{AffinityMode, UpstreamKeepalive};
use crate::metrics::{code_class, Metrics};
use pool::Pool;
use respond::{is_timeout, respond_plain, status_for_error};
use upstream::{expects_continue, has_token, Forwarding, Visitor};

/// The visitor-facing proxy.
pub struct Proxy {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
    active: Arc<ActiveRequests>,
    pool: Arc<Pool>,
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

impl ActiveGuard {
    fn new(active: &Arc<ActiveRequests>) -> ActiveGuard {
        active.0.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(active))
    }
}

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
    state: Arc<ClusterState>,
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
    /// Body of a local error answer, when more specific than the code's.
    error_body: Option<String>,
    /// `100 Continue` was sent to the visitor.
    continued: bool,
    /// A pooled connection failed as it was reused: the next attempts use
    /// new connections.
    fresh_only: bool,
}

impl RequestCtx {
    fn new(active: &Arc<ActiveRequests>, state: Arc<ClusterState>) -> RequestCtx {
        RequestCtx {
            _active: ActiveGuard::new(active),
            started: Instant::now(),
            state,
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
            error_body: None,
            continued: false,
            fresh_only: false,
        }
    }

    fn group(&self) -> Option<&Group> {
        self.state.groups.get(self.group)
    }

    fn group_name(&self) -> &str {
        self.group().map_or("-", |g| g.name())
    }

    fn node_name(&self) -> &str {
        match (self.group(), self.tried.last(), &self.current) {
            (Some(g), Some(&i), Some(_)) => g.nodes.get(i).map_or("-", |n| n.config.name.as_str()),
            _ => "-",
        }
    }

    fn tries_left(&self) -> bool {
        let tries = self.state.config.retries.tries;
        (self.tried.len() as u32) < tries
    }
}

/// How an attempt on a node ended, when it did not fail.
enum Attempt {
    /// The response went to the visitor; whether their connection can
    /// carry another request.
    Done(bool),
    /// The node answered 404 and another node is to be asked
    /// (`retry_on_404`).
    Retry404,
}

/// What `admit` decided.
enum Admission {
    /// Proxy the request.
    Proxy,
    /// Answer locally with this code and body; whether the visitor's
    /// connection may carry another request.
    Answer(u16, String, bool),
}

impl Proxy {
    pub fn new(
        cluster: Arc<Cluster>,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
        active: Arc<ActiveRequests>,
        pool: Arc<Pool>,
    ) -> Proxy {
        Proxy {
            cluster,
            metrics,
            access_log,
            active,
            pool,
        }
    }

    /// Serve every request of one visitor connection, in order.
    async fn serve(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut shutdown = shutdown.clone();
        let mut next = Some((stream, None));
        let mut reused = false;
        // Known after the first request is read.
        let mut visitor: Option<Option<Visitor>> = None;
        while let Some((stream, prefix)) = next.take() {
            if *shutdown.borrow() {
                return;
            }
            let state = self.cluster.state();
            let t = state.config.timeouts;
            let keepalive = t.client_keepalive.as_secs().max(1);
            let mut session = ServerSession::new_http1(stream);
            session.set_read_timeout(Some(t.client_read));
            session.set_write_timeout(Some(t.client_write));
            session.set_pipelining_enabled(true);
            if let Some(prefix) = prefix {
                session.set_pipelined_prefix(prefix);
            }
            if reused {
                // Waiting for the next request is bounded by the keep-alive
                // timeout, not by the read timeout.
                session.set_keepalive(Some(keepalive));
            }
            let read = tokio::select! {
                biased;
                read = session.read_request() => read,
                // An idle visitor connection closes as the server stops.
                _ = shutdown.changed() => return,
            };
            match read {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    if e.etype() == &ErrorType::InvalidHTTPHeader {
                        tracing::debug!("bad request: {e}");
                        let _ = respond_plain(&mut session, 400, respond::plain_body(400)).await;
                    }
                    return;
                }
            }
            let keep = wants_keepalive(session.req_header()) && !*shutdown.borrow();
            session.set_keepalive(keep.then_some(keepalive));
            let visitor = visitor.get_or_insert_with(|| client_ip(&session).map(Visitor::new));
            if !self.handle(&mut session, state, visitor.as_ref()).await {
                return;
            }
            next = match session.finish().await {
                Ok(Some(reusable)) => Some(reusable.into_parts()),
                _ => None,
            };
            reused = true;
        }
    }

    /// One request, start to end. Whether the visitor's connection can carry
    /// another one.
    async fn handle(
        &self,
        session: &mut ServerSession,
        state: Arc<ClusterState>,
        visitor: Option<&Visitor>,
    ) -> bool {
        let mut ctx = RequestCtx::new(&self.active, state);
        let reusable = match self.proxy(session, &mut ctx, visitor).await {
            Ok(reusable) => reusable,
            Err(e) => {
                self.fail(session, &e, &mut ctx).await;
                false
            }
        };
        self.log(session, &ctx);
        reusable
    }

    async fn proxy(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        visitor: Option<&Visitor>,
    ) -> Result<bool> {
        match self.admit(session, ctx) {
            Admission::Proxy => {}
            Admission::Answer(code, body, reusable) => {
                if !reusable {
                    session.set_keepalive(None);
                }
                respond_plain(session, code, body).await?;
                return Ok(reusable);
            }
        }
        // A body read from the visitor is kept (up to 64 KiB) so that a
        // retry can send it again.
        session.enable_retry_buffering();
        loop {
            let (index, conn) = self.connect(ctx).await?;
            match self.attempt(session, ctx, visitor, index, conn).await {
                Ok(Attempt::Done(reusable)) => return Ok(reusable),
                Ok(Attempt::Retry404) => {}
                Err((e, reused)) => {
                    let e = e.more_context(format!(
                        "node {}",
                        ctx.group()
                            .map_or("-", |g| g.nodes[index].config.name.as_str())
                    ));
                    if !self.retry_after_error(session, ctx, &e, reused) {
                        return Err(e);
                    }
                    tracing::debug!(group = ctx.group_name(), "retrying on another node: {e}");
                }
            }
        }
    }

    /// Status-page guard, routing, write and session targets.
    fn admit(&self, session: &ServerSession, ctx: &mut RequestCtx) -> Admission {
        let state = Arc::clone(&ctx.state);
        let req = session.req_header();
        if req.method == http::Method::CONNECT {
            // A tunnel through the proxy is no request for the site (nginx
            // and pingora refuse it too); what follows is not HTTP.
            return Admission::Answer(405, respond::plain_body(405).into(), false);
        }
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
            return Admission::Answer(403, respond::plain_body(403).into(), true);
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
            return Admission::Proxy;
        };
        let route = route.and_then(|i| state.config.routes.get(i));
        if let Some(route) = route {
            if let Some(primary) = write_target(route, group, req) {
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
                    return Admission::Answer(503, primary_down_body(name), true);
                }
            }
            ctx.retry_on_404 = route.retry_on_404
                && ctx.primary.is_none()
                && (req.method == http::Method::GET || req.method == http::Method::HEAD);
        }
        if ctx.primary.is_none() {
            ctx.session = session_key(group, req);
            let a = &group.config.affinity;
            if a.mode == AffinityMode::Cookie {
                ctx.pin = cookie_value(req, &a.insert_cookie).map(str::to_owned);
            }
        }
        Admission::Proxy
    }

    /// Pick a node for the next attempt and get a connection to it, moving
    /// on to another node while connecting fails and tries are left.
    async fn connect(&self, ctx: &mut RequestCtx) -> Result<(usize, upstream::Connection)> {
        loop {
            let index = self.pick(ctx)?;
            let state = Arc::clone(&ctx.state);
            let node = &state.groups[ctx.group].nodes[index];
            ctx.tried.push(index);
            ctx.current = Some(node.live.begin_request());
            ctx.upstream_started = Some(Instant::now());
            let t = state.config.timeouts;
            let pool = (!ctx.fresh_only).then_some(&*self.pool);
            match upstream::connect(pool, node.config.address, t.connect, t.idle).await {
                Ok(conn) => return Ok((index, conn)),
                Err(e) => {
                    self.node_failed(ctx, &e);
                    let e = e.into_up();
                    // Nothing was sent yet: any method may go to another node.
                    if !ctx.tries_left() {
                        return Err(e);
                    }
                    tracing::debug!(group = ctx.group_name(), "trying another node: {e}");
                }
            }
        }
    }

    /// The node for the next attempt, or the error that answers the request
    /// when there is none.
    fn pick(&self, ctx: &mut RequestCtx) -> Result<usize> {
        let state = Arc::clone(&ctx.state);
        let Some(group) = state.groups.get(ctx.group) else {
            return Error::e_explain(ErrorType::InternalError, "routed to no group");
        };
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
                return Error::e_explain(
                    ErrorType::HTTPStatus(503),
                    "the request's node (session or primary) is not usable",
                );
            }
        };
        if let Some(index) = picked {
            return Ok(index);
        }
        if ctx.retried_404 > 0 {
            // Every node that could be asked answered 404.
            return Error::e_explain(ErrorType::HTTPStatus(404), "404 on every node tried");
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
        Error::e_explain(ErrorType::HTTPStatus(code), why)
    }

    /// Send the request on `conn`, read the response head, and forward the
    /// response. An error comes with whether the connection was a pooled one.
    async fn attempt(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        visitor: Option<&Visitor>,
        index: usize,
        conn: upstream::Connection,
    ) -> std::result::Result<Attempt, (Box<Error>, bool)> {
        let reused = conn.reused;
        let up = |e: Box<Error>| (e.into_up(), reused);
        let down = |e: Box<Error>| (e.into_down(), reused);
        let state = Arc::clone(&ctx.state);
        let group = &state.groups[ctx.group];
        let node = &group.nodes[index];
        let t = state.config.timeouts;
        let keepalive = group.config.upstream_keepalive;
        let mut node_session = NodeSession::new(conn.stream);
        node_session.read_timeout = Some(t.read);
        node_session.write_timeout = Some(t.write);

        let req = upstream::request_for_node(
            session.req_header(),
            &Forwarding {
                trusted: &state.config.server.trusted_proxies,
                client: visitor,
                close: keepalive == UpstreamKeepalive::Off,
            },
        )
        .map_err(|e| (e.into_in(), reused))?;
        node_session.write_request_header(req).await.map_err(up)?;
        self.send_body(session, ctx, &mut node_session)
            .await
            .map_err(|e| (e, reused))?;

        // The response head; informational answers other than 101 are
        // consumed here (the visitor got its 100 Continue from us).
        loop {
            node_session.read_response().await.map_err(up)?;
            let status = node_session.get_status().map_or(0, |s| s.as_u16());
            if !(100..200).contains(&status) || status == 101 {
                break;
            }
        }
        node.live.record_success();
        if let Some(t) = ctx.upstream_started {
            ctx.upstream_time = Some(t.elapsed());
        }
        let Some(resp) = node_session.resp_header() else {
            return Err(up(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "no response header",
            )));
        };
        let mut resp = Box::new(resp.clone());
        let status = resp.status.as_u16();
        if ctx.retry_on_404 {
            if status == 404 && group.any_available(&ctx.tried, Instant::now()) {
                ctx.retried_404 += 1;
                ctx.current = None;
                group.stats.retried_404();
                self.metrics
                    .retry_on_404
                    .with_label_values(&[group.name()])
                    .inc();
                return Ok(Attempt::Retry404);
            }
            if status != 404 && ctx.retried_404 > 0 {
                group.stats.recovered_404();
            }
        }
        self.response_filter(session, &mut resp, ctx)
            .map_err(down)?;

        session.write_response_header(resp).await.map_err(down)?;
        if session.was_upgraded() && node_session.was_upgraded() {
            tunnel::run(session, &mut node_session)
                .await
                .map_err(|e| (e, reused))?;
            return Ok(Attempt::Done(false));
        }
        while let Some(chunk) = node_session.read_body_bytes().await.map_err(up)? {
            session
                .write_response_body(chunk, false)
                .await
                .map_err(down)?;
        }
        session.finish_body().await.map_err(down)?;
        if let Some(max_idle) = pool_for(keepalive, group, node, t.idle) {
            node_session.respect_keepalive();
            if let Some(stream) = node_session.reuse().await {
                self.pool.put(node.config.address, stream, max_idle);
            }
        }
        // Otherwise the connection closes here.
        Ok(Attempt::Done(true))
    }

    /// The visitor's request body to the node: what an earlier attempt
    /// already read first, then the rest.
    async fn send_body(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        node_session: &mut NodeSession,
    ) -> Result<()> {
        if let Some(sent_before) = session.get_retry_buffer() {
            node_session
                .write_body(&sent_before)
                .await
                .map_err(|e| e.into_up())?;
        }
        if !session.is_body_done() {
            if !ctx.continued && expects_continue(session.req_header()) {
                ctx.continued = true;
                session
                    .write_continue_response()
                    .await
                    .map_err(|e| e.into_down())?;
            }
            while let Some(chunk) = session
                .read_request_body()
                .await
                .map_err(|e| e.into_down())?
            {
                node_session
                    .write_body(&chunk)
                    .await
                    .map_err(|e| e.into_up())?;
            }
        }
        node_session.finish_body().await.map_err(|e| e.into_up())?;
        Ok(())
    }

    /// The response header as the visitor gets it: the session cookies, and
    /// no chunked framing for an HTTP/1.0 visitor (RFC 9112 6.1): its body
    /// then ends with the connection, as nginx does.
    fn response_filter(
        &self,
        session: &mut ServerSession,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if session.req_header().version == http::Version::HTTP_10
            && resp.headers.contains_key(header::TRANSFER_ENCODING)
        {
            resp.remove_header(&header::TRANSFER_ENCODING);
            session.set_keepalive(None);
        }
        if let Some(cookie) = ctx.set_cookie.take() {
            resp.append_header(header::SET_COOKIE, cookie)?;
        }
        if let Some(cookie) = pin_cookie(resp, ctx) {
            resp.append_header(header::SET_COOKIE, cookie)?;
        }
        Ok(())
    }

    /// After a failed attempt: count it against the node when it says
    /// something about the node, and say whether another attempt may follow.
    fn retry_after_error(
        &self,
        session: &ServerSession,
        ctx: &mut RequestCtx,
        e: &Error,
        reused: bool,
    ) -> bool {
        // A pooled connection the node had already closed says nothing about
        // the node's health; a timeout or a failure on a fresh one does.
        let stale_pooled = reused && !is_timeout(e);
        if e.esource() == &ErrorSource::Upstream && !stale_pooled {
            self.node_failed(ctx, e);
        }
        ctx.current = None;
        if e.esource() != &ErrorSource::Upstream || session.response_written().is_some() {
            return false;
        }
        let replayable =
            session.req_header().method.is_idempotent() && !session.retry_buffer_truncated();
        if !replayable {
            return false;
        }
        if stale_pooled && !ctx.fresh_only {
            // The keep-alive race (RFC 9112 9.3.1): the node closed a pooled
            // connection just as it was reused. Neither the node's failure
            // nor a try (nginx does not count it either): the same node may
            // take the request again, on a new connection.
            ctx.tried.pop();
            ctx.fresh_only = true;
            return true;
        }
        if !ctx.tries_left() {
            return false;
        }
        ctx.state.config.retries.idempotent_on_error
    }

    /// Count a failed attempt against the current node.
    fn node_failed(&self, ctx: &mut RequestCtx, e: &Error) {
        let failure = if is_timeout(e) {
            Failure::Timeout
        } else {
            Failure::Connect
        };
        ctx.last_failure = Some(failure);
        let (Some(group), Some(&i)) = (ctx.group(), ctx.tried.last()) else {
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

    /// The request failed: answer with a local error if nothing was sent yet.
    async fn fail(&self, session: &mut ServerSession, e: &Error, ctx: &mut RequestCtx) {
        let code = status_for_error(e, ctx.last_failure == Some(Failure::Timeout));
        if code >= 500 {
            tracing::warn!(
                group = ctx.group_name(),
                tried = ctx.tried.len(),
                "answered {code}: {e}"
            );
        }
        if code > 0 && session.response_written().is_none() {
            session.set_keepalive(None);
            let sent = match ctx.error_body.take() {
                Some(body) => respond_plain(session, code, body).await,
                None => respond_plain(session, code, respond::plain_body(code)).await,
            };
            if let Err(err) = sent {
                tracing::debug!("could not send the error response: {err}");
            }
        }
    }

    /// Metrics and the access log line of a finished request.
    fn log(&self, session: &ServerSession, ctx: &RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let group = ctx.group_name();
        let node = ctx.node_name();
        let elapsed = ctx.started.elapsed();
        if status != 0 {
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
    }
}

#[async_trait]
impl ServerApp for Proxy {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.serve(stream, shutdown).await;
        None
    }
}

/// Whether a node's connection goes back to the pool after a response, and
/// for how long at most.
///
/// On a node that holds a worker per connection (Apache prefork and
/// worker) an idle pooled connection keeps a worker from everyone else
/// (`K` on its scoreboard), and a proxy that holds more connections than the
/// node has workers leaves the extra ones in the node's accept backlog,
/// where requests hang until an idle connection is closed. So with `auto`
/// such a connection is kept only while the node, by its last status and
/// this proxy's requests since, has workers to spare beyond a reserve, and
/// for [`WORKER_NODE_IDLE`] at most; otherwise it closes and its worker
/// returns to the node's accept queue at once.
fn pool_for(
    keepalive: UpstreamKeepalive,
    group: &Group,
    node: &crate::cluster::node::Node,
    idle: Duration,
) -> Option<Duration> {
    match keepalive {
        UpstreamKeepalive::Off => None,
        UpstreamKeepalive::On => Some(idle),
        UpstreamKeepalive::Auto if !node.live.worker_per_connection() => Some(idle),
        UpstreamKeepalive::Auto => {
            let load = node.live.load(&group.config, &node.config, Instant::now());
            let capacity = f64::from(load.capacity?);
            let reserve = (capacity / 8.0).max(2.0);
            // `busy` still counts this request's worker, which the kept
            // connection goes on holding.
            (capacity - load.busy >= reserve).then_some(idle.min(WORKER_NODE_IDLE))
        }
    }
}

/// How long an idle pooled connection to a worker-per-connection node is
/// kept with `upstream_keepalive = "auto"`.
const WORKER_NODE_IDLE: Duration = Duration::from_secs(1);

/// HTTP/1.1 keeps the connection unless the visitor says `close`; HTTP/1.0
/// only when it says `keep-alive`.
fn wants_keepalive(req: &pingora::http::RequestHeader) -> bool {
    let says = |token: &str| has_token(req, header::CONNECTION, token);
    match req.version {
        http::Version::HTTP_11 => !says("close"),
        http::Version::HTTP_10 => says("keep-alive"),
        _ => false,
    }
}

fn client_ip(session: &ServerSession) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}
