//! The proxy: the path of a visitor's request, from its connection to a node
//! and back.
//!
//! A pingora [`ServerApp`] that runs each visitor connection as one loop of
//! HTTP/1.x requests, with its own framing (`http1`) on both sides: heads
//! are parsed in place and forwarded as bytes, bodies as they came. An
//! HTTP/2 connection (`http2`: TLS with ALPN `h2` through
//! [`Proxy::serve_h2`], or the h2c preface on a plain listener) feeds each
//! of its streams to the same request path: what the path sees of the
//! visitor, whatever its protocol, is `request::VisitorIo` and a
//! `RequestHead`; nodes are always spoken to in HTTP/1.1. Each
//! request goes through the same phases, each a method here: `admit` (the
//! `guard` refuses node status pages, the cluster's router picks the group,
//! `choose` the write or session target), `attempt` (pick a node, get a
//! connection from the `pool` or a new one, send the request as `upstream`
//! shapes it, read the response head) repeated while a retry is allowed,
//! the response to the visitor (its head shaped by `downstream`, the body by
//! `forward_body`, `tunnel` for a WebSocket), the node's connection back to
//! the pool, `fail` (a local 4xx/5xx from `respond`) and `log`. Per-request
//! state lives in [`RequestCtx`], the visitor's connection and buffers in
//! `downstream::Downstream`; the cluster state a request started with stays with it
//! to the end, so a reload never changes the rules under a request in
//! flight.
//!
//! Why not pingora's own `HttpProxy`, nor its HTTP/1 sessions: measured on
//! this machine, `HttpProxy` cost about twice nginx's CPU per request, and a
//! loop on pingora's sessions still 1.5 times (header maps with case maps,
//! header copies, a session and a digest per request); see
//! benches/README.md.

mod arrival;
pub use arrival::Arrival;
mod choose;
mod https;
use choose::{cookie_value, pin_cookie, primary_down_body, session_key, write_target, SessionKey};
mod downstream;
use downstream::{read_head, Downstream, Idle, Shape};
pub mod forwarded;
pub mod guard;
pub mod http1;
pub mod http2;
pub mod pool;
pub mod proxy_protocol;
mod request;
use request::VisitorIo;
mod queued;
mod respond;
pub mod spool;
#[cfg(test)]
mod tests;
mod tunnel;
mod turn;
pub mod upstream;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType, Result};
use tokio::net::TcpStream;

use crate::access_log::{AccessLog, Entry};
use crate::clock;
use crate::cluster::group::Group;
use crate::cluster::lend::Lent;
use crate::cluster::limit;
use crate::cluster::node::{InflightGuard, Node, NodeLive};
use crate::cluster::{Cluster, ClusterState};
use crate::config::{AffinityMode, Timeouts, UpstreamKeepalive};
use crate::metrics::{code_class, Metrics};
use crate::tls::{Terminator, Terminators};
use http1::{
    io_error, Body, Framing, HeadError, Io, Limits, Outgoing, Recode, RequestHead, Version,
};
use pool::Pool;
use respond::{is_timeout, status_for_error};
use spool::{BodyBuffer, Spool};
use upstream::{read_response_head, Forwarding, Visitor};

/// How much one read from a visitor asks for at first (most request heads
/// fit; an idle connection holds no more than this).
const VISITOR_READ: usize = 1024;
/// How much the first read from a node asks for: a response head and a
/// small body (HAProxy's buffer size).
const NODE_READ: usize = 16 * 1024;
/// How much one read asks for in a body, either side: a 64 KiB response
/// costs 74.5 us of CPU with it, 97 us with 16 KiB reads (benches/README.md).
const BODY_READ: usize = 64 * 1024;
/// Most request body kept to send again on a retry when the body is
/// streamed (pingora's and nginx's in-memory client body buffer are of
/// this order); a buffered body can always be sent again.
const MAX_REPLAY: usize = 64 * 1024;
/// Most informational (1xx) responses a node may send before its answer.
const MAX_INFORMATIONAL: u32 = 8;
/// The status logged for a request the visitor cancelled before its
/// response ended (nginx's 499).
const CANCELLED: u16 = 499;

/// The visitor-facing proxy.
pub struct Proxy {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
    active: Arc<ActiveRequests>,
    pool: Arc<Pool>,
    /// The TLS listeners among the proxy's (`crate::tls`).
    tls: Option<Arc<Terminators>>,
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
    /// The visitor's connection may carry another request after this one.
    keep: bool,
    /// Where the visitor's request body is.
    body: Body,
    /// The whole request body, read before a node was chosen (request
    /// buffering).
    buffered: Option<BodyBuffer>,
    /// Request body bytes read from the visitor so far (for the limit).
    body_read: u64,
    /// The request body limit of the request's route (0: none).
    body_limit: u64,
    /// The request body sent so far, to send again on a retry.
    replay: Vec<u8>,
    /// More body was sent than `replay` keeps: no retry.
    replay_truncated: bool,
    /// Status of the response the visitor gets, once the node's head came
    /// (or a local answer was made).
    status: Option<u16>,
    /// Bytes of a response went to the visitor: no other answer can be
    /// given any more.
    sent_to_visitor: bool,
    /// Response body bytes sent to the visitor.
    body_sent: u64,
    group: usize,
    /// Indices of nodes tried so far (in order).
    tried: Vec<usize>,
    /// The node of the current attempt, counted in flight while held.
    current: Option<InflightGuard>,
    /// The node whose answer the visitor got, once the node's part is over.
    answered_by: Option<usize>,
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
    /// `Retry-After` seconds of a local 503 (the group's queue).
    retry_after: Option<u64>,
}

impl RequestCtx {
    fn new(
        active: &Arc<ActiveRequests>,
        state: Arc<ClusterState>,
        keep: bool,
        body: Framing,
    ) -> RequestCtx {
        RequestCtx {
            _active: ActiveGuard::new(active),
            started: clock::now(),
            state,
            keep,
            body: Body::new(body),
            buffered: None,
            body_read: 0,
            body_limit: 0,
            replay: Vec::new(),
            replay_truncated: false,
            status: None,
            sent_to_visitor: false,
            body_sent: 0,
            group: 0,
            tried: Vec::new(),
            current: None,
            answered_by: None,
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
            retry_after: None,
        }
    }

    fn group(&self) -> Option<&Group> {
        self.state.groups.get(self.group)
    }

    fn group_name(&self) -> &str {
        self.group().map_or("-", |g| g.name())
    }

    /// The node the request is with: the one whose answer the visitor got,
    /// else the one of the attempt in progress.
    fn node_index(&self) -> Option<usize> {
        match (self.answered_by, self.tried.last(), &self.current) {
            (Some(i), _, _) | (None, Some(&i), Some(_)) => Some(i),
            _ => None,
        }
    }

    fn node_name(&self) -> &str {
        match (self.group(), self.node_index()) {
            (Some(g), Some(i)) => g.nodes.get(i).map_or("-", |n| n.config.name.as_str()),
            _ => "-",
        }
    }

    /// The live state of the node [`RequestCtx::node_name`] names.
    fn node_live(&self) -> Option<&Arc<NodeLive>> {
        self.group()?.live(self.node_index()?)
    }

    fn tries_left(&self) -> bool {
        let tries = self.state.config.retries.tries;
        (self.tried.len() as u32) < tries
    }

    /// Keep request body bytes just sent, for a retry.
    fn sent_body(&mut self, bytes: &[u8]) {
        if self.replay_truncated {
            return;
        }
        if self.replay.len() + bytes.len() > MAX_REPLAY {
            self.replay_truncated = true;
            self.replay = Vec::new();
        } else {
            self.replay.extend_from_slice(bytes);
        }
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
    /// Send the visitor to this URL with a 308 (`https_redirect`).
    Redirect(String),
}

/// The status a visitor's unreadable request head is answered with.
fn status_for_head(e: HeadError) -> u16 {
    match e {
        HeadError::Malformed | HeadError::Ambiguous => 400,
        HeadError::TooLarge => 431,
        HeadError::UnknownCoding => 501,
    }
}

/// The head limits of the config, as the HTTP/1 parser takes them, for a
/// request or a node's response.
fn head_limits(config: &crate::config::Config, request: bool) -> Limits {
    let l = &config.limits;
    Limits {
        max_head: if request {
            l.max_request_head
        } else {
            l.max_response_head
        },
        max_headers: l.max_headers,
    }
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
            tls: None,
        }
    }

    /// Terminate TLS on the connections accepted on these listeners'
    /// addresses.
    pub fn with_tls(mut self, tls: Arc<Terminators>) -> Proxy {
        self.tls = (!tls.is_empty()).then_some(tls);
        self
    }

    /// The TLS handshake of a connection accepted on a TLS listener (after
    /// its PROXY protocol header, from a trusted source), bounded by
    /// `client_read`. `None`: the connection is over (logged, counted).
    async fn accept_tls(
        &self,
        terminator: &Terminator,
        stream: Stream,
        local: Option<std::net::SocketAddr>,
    ) -> Option<(Stream, Arrival)> {
        let state = self.cluster.state();
        let timeout = state.config.timeouts.client_read;
        let peer = peer_address(&stream);
        let trusted = &state.config.server.proxy_protocol_from;
        let from_proxy = peer.is_some_and(|p| trusted.iter().any(|n| n.contains(&p.ip())));
        let mut arrival = Arrival::plain(local);
        let stream = if from_proxy {
            let mut io = Io::new(stream, VISITOR_READ);
            match read_proxy_header(&mut io, timeout).await {
                Ok(addrs) => arrival.proxy_header = Some(Box::new(addrs)),
                Err(e) => {
                    tracing::debug!(client = ?peer, "closed: {e}");
                    self.metrics.bad_requests.inc();
                    return None;
                }
            }
            // What came after the header is the start of the handshake.
            let rest = io.unread().to_vec();
            let mut l4 = into_l4(io.into_inner())?;
            if !rest.is_empty() {
                l4.rewind(&rest);
            }
            l4
        } else {
            into_l4(stream)?
        };
        match terminator.accept(stream, timeout).await {
            Ok((stream, info)) => {
                self.metrics
                    .tls_handshakes
                    .with_label_values(&["success", info.version])
                    .inc();
                arrival.tls = Some(Box::new(info));
                Some((stream, arrival))
            }
            Err(e) => {
                let result = match e {
                    crate::tls::HandshakeError::Timeout(_) => "timeout",
                    crate::tls::HandshakeError::Failed(_) => "failure",
                };
                self.metrics
                    .tls_handshakes
                    .with_label_values(&[result, "-"])
                    .inc();
                tracing::debug!(client = ?peer, "{e}");
                None
            }
        }
    }

    /// Serve every request of one visitor connection, in order.
    ///
    /// Between two requests (and before the first) the connection holds
    /// only an [`Idle`] and the wait for the next request's first bytes;
    /// the request itself, from its head to the end of its response, is
    /// one boxed future of [`Proxy::request`], made when those bytes came
    /// and dropped after the response (one allocation per request, where
    /// the request path's state was boxed before too). An idle keep-alive
    /// connection then costs about as much as HAProxy's (benches/README.md,
    /// "Idle connections at 1.0x HAProxy's memory"). Whatever is added here
    /// is held by every idle connection: box the rarer branch.
    ///
    /// Its output is always `None` (no stream handed back): for a plain
    /// connection this future is the box `ServerApp::process_new` returns.
    ///
    /// Not an `async fn`: its arguments would stay in its future beside
    /// the `Idle` they are moved into (an `async fn` keeps its arguments
    /// whole); the future here captures only the `Idle` and uses it in
    /// place. For the same reason the wait is written out here rather
    /// than called as an `async fn` of `Idle`.
    fn serve<'a>(
        self: &'a Arc<Self>,
        stream: Stream,
        arrival: Arrival,
        shutdown: &ShutdownWatch,
    ) -> impl Future<Output = Option<Stream>> + Send + 'a {
        let ip = peer_address(&stream).map(|a| a.ip());
        let client = match arrival.proxy_header.as_deref() {
            Some(Some((source, destination))) => Some(Visitor::proxied(*source, *destination)),
            _ => ip.map(Visitor::new),
        };
        let from_proxy = arrival.proxy_header.is_none() && {
            let state = self.cluster.state();
            let trusted = &state.config.server.proxy_protocol_from;
            ip.is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip)))
        };
        let mut idle = Idle {
            io: Some(Io::new(stream, VISITOR_READ)),
            client,
            arrival,
            shutdown: Some(shutdown.clone()),
        };
        async move {
            // Boxed: only a trusted proxy's connections start with a header.
            if from_proxy && !Box::pin(self.take_proxy_header(&mut idle)).await {
                return None;
            }
            let mut first = true;
            loop {
                // A connection accepted before the listener closed has its
                // first request served even as the server stops (as nginx
                // does); an idle keep-alive connection is closed.
                if !first && idle.stopping() {
                    return None;
                }
                let state = self.cluster.state();
                let (Some(io), Some(stop)) = (idle.io.as_mut(), idle.shutdown.as_mut()) else {
                    return None;
                };
                // Pipelined bytes are the next request's: no wait.
                if io.unread().is_empty() {
                    // Waiting for the next request is bounded by the
                    // keep-alive timeout (the rest of a request by the read
                    // timeout), and ends as the server stops.
                    let t = &state.config.timeouts;
                    let read = if first {
                        io.wait(t.client_read).await
                    } else {
                        let wait = t.client_keepalive.max(Duration::from_secs(1));
                        tokio::select! {
                            biased;
                            read = io.wait(wait) => read,
                            _ = stop.changed() => return None,
                        }
                    };
                    // Closed, or quiet for the whole wait.
                    if !matches!(read, Ok(Ok(n)) if n > 0) {
                        return None;
                    }
                }
                if !Box::pin(self.request(&mut idle, state, first)).await {
                    return None;
                }
                first = false;
            }
        }
    }

    /// Read the PROXY protocol header a trusted source starts its
    /// connection with; the visitor is the one it names. `false`: the
    /// connection is over (a bad header, logged and counted).
    async fn take_proxy_header(&self, idle: &mut Idle) -> bool {
        let timeout = self.cluster.state().config.timeouts.client_read;
        let Some(io) = idle.io.as_mut() else {
            return false;
        };
        match read_proxy_header(io, timeout).await {
            Ok(Some((source, destination))) => {
                idle.client = Some(Visitor::proxied(source, destination));
                true
            }
            Ok(None) => true,
            Err(e) => {
                let ip = peer_address(io.get_ref()).map(|a| a.ip());
                tracing::debug!(client = ?ip, "closed: {e}");
                self.metrics.bad_requests.inc();
                false
            }
        }
    }

    /// The request whose first bytes came on `idle` (on a new connection
    /// with h2c on: the HTTP/2 connection, if they are its preface): its
    /// head read, the request handled. Whether the connection can carry
    /// another request (then `idle` has it back).
    async fn request(
        self: &Arc<Self>,
        idle: &mut Idle,
        state: Arc<ClusterState>,
        first: bool,
    ) -> bool {
        let t = state.config.timeouts;
        // HTTP/2 with prior knowledge (h2c): the client preface starts the
        // connection; its bytes go on to the HTTP/2 side. Not on TLS, where
        // ALPN says the protocol (as pingora does).
        if first && state.config.server.h2c && !idle.arrival.is_tls() {
            let Some(io) = idle.io.as_mut() else {
                return false;
            };
            match http2::sniff(io, t.client_read).await {
                http2::Sniffed::Http2 => {
                    drop(state);
                    let Some(io) = idle.io.take() else {
                        return false;
                    };
                    let (stream, read) = io.into_parts();
                    let (client, arrival) = (idle.client.take(), std::mem::take(&mut idle.arrival));
                    let Some(shutdown) = idle.shutdown.take() else {
                        return false;
                    };
                    // Boxed, as the handshake in `process_new`: an HTTP/1
                    // request does not carry room for HTTP/2's state.
                    Box::pin(self.serve_h2_after(stream, read, client, arrival, &shutdown)).await;
                    return false;
                }
                http2::Sniffed::Closed => return false,
                http2::Sniffed::Http1 => {}
            }
        }
        let Some(mut down) = idle.take() else {
            return false;
        };
        let wait = if first {
            t.client_read
        } else {
            t.client_keepalive.max(Duration::from_secs(1))
        };
        let limits = head_limits(&state.config, true);
        let VisitorIo::Http1(io) = &mut down.io else {
            return false;
        };
        let read = if first {
            read_head(io, &mut down.head, &limits, wait, t.client_read).await
        } else {
            tokio::select! {
                biased;
                read = read_head(io, &mut down.head, &limits, wait, t.client_read) => read,
                _ = down.shutdown.changed() => return false,
            }
        };
        match read {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                let ip = down.io.http1().and_then(|io| peer_address(io.get_ref()));
                tracing::debug!(client = ?ip.map(|a| a.ip()), "bad request: {e}");
                self.metrics.bad_requests.inc();
                let code = status_for_head(e);
                let answer = request::Answer {
                    code,
                    body: respond::plain_body(code),
                    location: None,
                    keep: false,
                    head_only: false,
                    retry_after: None,
                };
                let _ = down.io.answer(&mut down.out, &answer, t.client_write).await;
                return false;
            }
        }
        let keep = down.head.wants_keepalive() && !down.stopping();
        if !self.handle(&mut down, state, keep).await {
            return false;
        }
        // An idle connection holds no buffer (pipelined bytes stay).
        idle.give_back(down);
        true
    }

    /// One request, start to end. Whether the visitor's connection can carry
    /// another one.
    async fn handle(&self, down: &mut Downstream, state: Arc<ClusterState>, keep: bool) -> bool {
        let _in_flight = turn::InFlight::enter();
        let mut ctx = RequestCtx::new(&self.active, state, keep, down.head.body);
        // A visitor that can cancel its request (an HTTP/2 stream reset)
        // drops it wherever it is: a node's connection is then closed, not
        // pooled, and the request is logged as nginx does, 499.
        let result = match down.io.cancellation() {
            None => self.proxy(down, &mut ctx).await,
            Some(cancel) => tokio::select! {
                biased;
                () = cancel.cancelled() => Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "the visitor cancelled the request",
                )
                .into_down()),
                result = self.proxy(down, &mut ctx) => result,
            },
        };
        let reusable = match result {
            Ok(reusable) => reusable,
            Err(e) if e.etype() == &ErrorType::ConnectionClosed && down.io.is_cancelled() => {
                ctx.status = Some(CANCELLED);
                ctx.current = None;
                false
            }
            Err(e) => {
                self.fail(down, &e, &mut ctx).await;
                false
            }
        };
        self.log(down, &ctx);
        reusable
    }

    async fn proxy(&self, down: &mut Downstream, ctx: &mut RequestCtx) -> Result<bool> {
        match self.admit(down, ctx) {
            Admission::Proxy => {}
            Admission::Answer(code, body, reusable) => {
                // A body not read would be taken for the next request.
                let keep = reusable && ctx.keep && ctx.body.is_done() && !down.stopping();
                self.answer(down, ctx, code, &body, keep).await?;
                return Ok(keep);
            }
            Admission::Redirect(location) => {
                let keep = ctx.keep && ctx.body.is_done() && !down.stopping();
                let body = respond::REDIRECT_BODY;
                self.send_answer(down, ctx, 308, body, Some(&location), keep)
                    .await?;
                return Ok(keep);
            }
        }
        if !ctx.body.is_done() {
            self.read_body_first(down, ctx).await?;
        }
        loop {
            let (index, conn) = self.connect(down, ctx).await?;
            match self.attempt(down, ctx, index, conn).await {
                Ok(Attempt::Done(reusable)) => return Ok(reusable),
                Ok(Attempt::Retry404) => {}
                Err((e, reused)) => {
                    let e = e.more_context(format!(
                        "node {}",
                        ctx.group()
                            .map_or("-", |g| g.nodes[index].config.name.as_str())
                    ));
                    if !self.retry_after_error(&down.head, ctx, &e, reused) {
                        return Err(e);
                    }
                    tracing::debug!(group = ctx.group_name(), "retrying on another node: {e}");
                }
            }
        }
    }

    /// A local answer (status page refused, no node, bad request).
    async fn answer(
        &self,
        down: &mut Downstream,
        ctx: &mut RequestCtx,
        code: u16,
        body: &str,
        keep: bool,
    ) -> Result<()> {
        self.send_answer(down, ctx, code, body, None, keep).await
    }

    /// Send a local answer: `body` with `code`, and a `Location` when
    /// given (a redirect); no body for a HEAD request (RFC 9110 9.3.2).
    async fn send_answer(
        &self,
        down: &mut Downstream,
        ctx: &mut RequestCtx,
        code: u16,
        body: &str,
        location: Option<&str>,
        keep: bool,
    ) -> Result<()> {
        let head_only = down.head.method == http::Method::HEAD;
        ctx.status = Some(code);
        ctx.sent_to_visitor = true;
        let t = ctx.state.config.timeouts;
        let answer = request::Answer {
            code,
            body,
            location,
            keep,
            head_only,
            retry_after: ctx.retry_after,
        };
        down.io
            .answer(&mut down.out, &answer, t.client_write)
            .await
            .map_err(|e| io_error(e, true, "writing to the visitor").into_down())?;
        if !head_only {
            ctx.body_sent += body.len() as u64;
        }
        Ok(())
    }

    /// Status-page guard, routing, write and session targets.
    fn admit(&self, down: &Downstream, ctx: &mut RequestCtx) -> Admission {
        let state = Arc::clone(&ctx.state);
        let req = &down.head;
        if req.method == http::Method::CONNECT {
            // A tunnel through the proxy is no request for the site (nginx
            // and pingora refuse it too); what follows is not HTTP.
            return Admission::Answer(405, respond::plain_body(405).into(), false);
        }
        let target = req.target();
        if state.guard.is_protected(target.as_bytes()) {
            tracing::info!(
                client = ?down.client.as_ref().map(|c| c.ip),
                target,
                "refused a request for a node status page"
            );
            self.metrics.denied_status_paths.inc();
            return Admission::Answer(403, respond::plain_body(403).into(), true);
        }
        let (group, route) = state.router.route_with_index(|| req.host(), || req.path());
        ctx.group = group;
        ctx.route = route;
        let https_redirect = route
            .and_then(|i| state.config.routes.get(i))
            .is_some_and(|r| r.https_redirect);
        let client = down.client.as_ref().map(|c| c.ip);
        let trusted = &state.config.server.trusted_proxies;
        if https_redirect && !https::is_https(&down.arrival, client, req, trusted) {
            let port = https::redirect_port(&state.config);
            return match req
                .host()
                .and_then(|h| https::location(h, port, &req.origin_target()))
            {
                Some(location) => Admission::Redirect(location),
                None => Admission::Answer(400, respond::plain_body(400).into(), false),
            };
        }
        ctx.body_limit = state.config.max_request_body(route);
        if let (Framing::Length(n), limit) = (req.body, ctx.body_limit) {
            if limit > 0 && n > limit {
                // Refused before any of it is read (also after `Expect:
                // 100-continue`, which then gets no 100): nginx's 413.
                return Admission::Answer(413, respond::plain_body(413).into(), false);
            }
        }
        let Some(group) = state.groups.get(ctx.group) else {
            return Admission::Proxy;
        };
        let route = route.and_then(|i| state.config.routes.get(i));
        if let Some(route) = route {
            if let Some(primary) = write_target(route, group, req) {
                let st = &group.stats;
                if group.node_available(primary, &[], clock::now()) {
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
    async fn connect(
        &self,
        down: &mut Downstream,
        ctx: &mut RequestCtx,
    ) -> Result<(usize, upstream::Connection)> {
        loop {
            let chosen = self.pick(ctx)?;
            // A slot under the node's limit, after a wait in the group's
            // queue if every node it may go to is at its limit.
            let gone = queued::visitor_io_gone(&mut down.io);
            let (index, slot) = self.slot(ctx, chosen, gone).await?;
            let state = Arc::clone(&ctx.state);
            let node = &state.groups[ctx.group].nodes[index];
            ctx.tried.push(index);
            ctx.current = Some(slot);
            ctx.upstream_started = Some(clock::now());
            let t = state.config.timeouts;
            let group = &state.groups[ctx.group];
            let pool = (!ctx.fresh_only && !private_connections(group)).then_some(&*self.pool);
            let make_room = || {
                // A new connection takes a worker. At the node's limit, an
                // idle connection another thread keeps is used instead (its
                // worker waits for a request); closed and replaced, its
                // worker would go back to the node's accept queue only
                // after the new connection got there.
                let h = node.live.holding(&group.config, &node.config, clock::now());
                if pool.is_some() && limit::idle_over(h.limit, h.inflight, h.idle) > 0 {
                    return self.pool.take_elsewhere(node.config.address, t.idle);
                }
                if node_is_full(group, node) {
                    self.pool.close_one_elsewhere(node.config.address);
                }
                None
            };
            match upstream::connect(pool, node.config.address, t.connect, t.idle, make_room).await {
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
        down: &mut Downstream,
        ctx: &mut RequestCtx,
        index: usize,
        conn: upstream::Connection,
    ) -> std::result::Result<Attempt, (Box<Error>, bool)> {
        let reused = conn.reused;
        let up = |e: Box<Error>| (e.into_up(), reused);
        let to_visitor = |e: io::Error| {
            (
                io_error(e, true, "writing to the visitor").into_down(),
                reused,
            )
        };
        let state = Arc::clone(&ctx.state);
        let group = &state.groups[ctx.group];
        let node = &group.nodes[index];
        let t = state.config.timeouts;
        let keepalive = group.config.upstream_keepalive;
        let mut node_io = Io::new(conn.stream, NODE_READ);

        // The head, what an earlier attempt sent of the body, and the body
        // bytes already at hand: one write; a new connection to a node that
        // asks for it starts with the PROXY protocol header.
        down.out.clear();
        if let (Some(version), false) = (group.config.send_proxy_protocol, reused) {
            let addrs = visitor_addresses(down);
            down.out
                .extend_from_slice(&proxy_protocol::header(version, addrs));
        }
        let port = down.visitor_port();
        upstream::write_request_head(
            &mut down.out,
            &down.head,
            &Forwarding {
                trusted: &state.config.server.trusted_proxies,
                client: down.client.as_ref(),
                scheme: down.arrival.scheme(),
                port,
                close: keepalive == UpstreamKeepalive::Off || private_connections(group),
                framing: request_framing(&down.head, ctx.buffered.as_ref()),
            },
        );
        if let Some(buffer) = &ctx.buffered {
            send_buffered(&mut node_io, &mut down.out, buffer, t.write)
                .await
                .map_err(|e| up(io_error(e, true, "writing to the node")))?;
        } else {
            down.out.extend_from_slice(&ctx.replay);
            take_buffered_body(&mut down.io, ctx, &mut down.out).map_err(|e| (e, reused))?;
            node_io
                .write_all(&down.out, t.write)
                .await
                .map_err(|e| up(io_error(e, true, "writing to the node")))?;
            self.send_body(down, ctx, &mut node_io)
                .await
                .map_err(|e| (e, reused))?;
        }

        // The response head; informational answers other than 101 are
        // consumed here (the visitor got its 100 Continue from us).
        let resp = &mut down.resp;
        let limits = head_limits(&state.config, false);
        let mut informational = 0;
        // Counted while it waits: a node whose requests stop being answered
        // is held back at once (`NodeLive::check_stall`).
        let waiting = node.live.awaiting_head();
        loop {
            read_response_head(&mut node_io, resp, &limits, t.read)
                .await
                .map_err(up)?;
            if !(100..200).contains(&resp.status) || resp.status == 101 {
                break;
            }
            informational += 1;
            if informational > MAX_INFORMATIONAL {
                return Err(up(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "the node sent more than 8 informational responses",
                )));
            }
        }
        if let Some(event) = node.live.record_head(waiting) {
            event.log(group.name(), &node.config.name);
        }
        if let Some(t) = ctx.upstream_started {
            ctx.upstream_time = Some(clock::since(t));
        }
        let status = resp.status;
        if ctx.retry_on_404 {
            if status == 404 && group.any_available(&ctx.tried, clock::now()) {
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
        let (framing, declared) = resp.framing_declared(&down.head.method).map_err(|e| {
            up(Error::because(
                ErrorType::InvalidHTTPHeader,
                "the node's response",
                e,
            ))
        })?;
        let upgrade = status == 101;
        if upgrade && !down.head.is_websocket_upgrade() {
            return Err(up(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "the node switched protocols unasked",
            )));
        }
        // An HTTP/1.0 visitor cannot take chunked coding (RFC 9112 6.1): the
        // body is decoded and ends with the connection, as nginx does.
        // HTTP/2 has no chunked coding either: its DATA frames carry the
        // decoded body and END_STREAM ends it.
        let http10 = down.head.version == Version::Http10;
        let h2 = down.io.is_http2();
        let (recode, outgoing) = response_framing(framing, declared, status, http10 || h2);
        // The visitor's connection goes on when the response's end is known
        // to it: a length or chunks the proxy writes, or no body at all.
        let delimited = outgoing != Outgoing::None || framing == Framing::Length(0);
        // A response finished while the server stops says the connection
        // closes after it (the visitor then does not reuse it and meet EOF).
        let keep =
            ctx.keep && !upgrade && delimited && ctx.body.is_done() && !*down.shutdown.borrow();
        let cookies = [ctx.set_cookie.take(), pin_cookie(resp, ctx)];
        let hsts = ctx
            .route
            .and_then(|i| state.config.routes.get(i))
            .and_then(|r| r.hsts.as_ref())
            .filter(|_| {
                let client = down.client.as_ref().map(|c| c.ip);
                let trusted = &state.config.server.trusted_proxies;
                https::is_https(&down.arrival, client, &down.head, trusted)
            })
            .map(crate::config::Hsts::header_value);
        down.out.clear();
        down.io
            .start_response(
                &mut down.out,
                resp,
                &Shape {
                    keep,
                    http10,
                    upgrade,
                    framing: outgoing,
                },
                cookies.iter().flatten(),
                hsts.as_deref(),
                framing == Framing::Length(0),
            )
            .map_err(to_visitor)?;
        ctx.status = Some(status);
        // An HTTP/2 head went at once.
        ctx.sent_to_visitor |= h2;

        if upgrade {
            ctx.sent_to_visitor = true;
            let Some(io) = down.io.http1() else {
                return Err(up(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "the node switched protocols on an HTTP/2 stream",
                )));
            };
            io.write_all(&down.out, t.client_write)
                .await
                .map_err(to_visitor)?;
            tunnel::run(io, &mut node_io, t.read)
                .await
                .map_err(|e| (e, reused))?;
            return Ok(Attempt::Done(false));
        }

        let buffering = &state.config.buffering;
        let max_file = if state.config.response_buffering(ctx.route) {
            buffering.max_temp_file
        } else {
            0
        };
        let mut spool = Spool::new(std::mem::take(&mut down.out), buffering.memory, max_file);
        read_response_body(down, &mut node_io, ctx, &mut spool, framing, recode, &t)
            .await
            .map_err(|e| (e, reused))?;
        // The node's part is over: its connection (and on a prefork node,
        // its worker) is free before the visitor has taken the response.
        ctx.upstream_time = ctx.upstream_started.map(clock::since);
        let node_keeps = down.resp.keeps_connection()
            && framing != Framing::UntilClose
            && node_io.unread().is_empty()
            && ctx.body.is_done();
        let pooled = if node_keeps {
            pool_for(keepalive, group, node, t.idle)
        } else {
            None
        };
        match pooled {
            Some(max_idle) => self.give_back(node, node_io.into_inner(), max_idle),
            // Closed now, not when the visitor has taken the response.
            None => {
                tracing::debug!(
                    group = group.name(),
                    node = node.config.name.as_str(),
                    "closing the node's connection (not kept idle)"
                );
                drop(node_io)
            }
        }
        ctx.answered_by = ctx.tried.last().copied();
        ctx.current = None;
        // Held whole (nothing sent yet): on a busy thread it goes out with
        // the other responses of this turn of the event loop.
        if !ctx.sent_to_visitor {
            turn::before_whole_response().await;
        }
        flush_spool(down, ctx, &mut spool, &t)
            .await
            .map_err(|e| (e, reused))?;
        // Otherwise the connection closes here.
        Ok(Attempt::Done(keep))
    }

    /// The rest of the visitor's request body to the node, after what was
    /// at hand when the head went.
    async fn send_body(
        &self,
        down: &mut Downstream,
        ctx: &mut RequestCtx,
        node: &mut Io<TcpStream>,
    ) -> Result<()> {
        if ctx.body.is_done() {
            return Ok(());
        }
        let t = ctx.state.config.timeouts;
        continue_if_expected(down, ctx).await?;
        while !ctx.body.is_done() {
            read_more_body(&mut down.io, t.client_read).await?;
            let input = down.io.unread();
            down.out.clear();
            let n = http1::forward_body(&mut ctx.body, input, &mut down.out)
                .map_err(bad_request_body)?;
            down.io.consume(n);
            count_body(ctx, down.out.len())?;
            if !down.out.is_empty() {
                node.write_all(&down.out, t.write)
                    .await
                    .map_err(|e| io_error(e, true, "writing to the node").into_up())?;
                ctx.sent_body(&down.out);
            }
        }
        Ok(())
    }

    /// With request buffering (the route's), read the whole request body
    /// before a node is chosen, so that no node's worker waits on a slow
    /// upload. A body over the route's limit ends in a 413 (`count_body`).
    async fn read_body_first(&self, down: &mut Downstream, ctx: &mut RequestCtx) -> Result<()> {
        let state = Arc::clone(&ctx.state);
        let config = &state.config;
        if !config.request_buffering(ctx.route) || down.head.is_websocket_upgrade() {
            return Ok(());
        }
        let t = config.timeouts;
        let b = &config.buffering;
        continue_if_expected(down, ctx).await?;
        let mut buffer = BodyBuffer::default();
        let mut data = Vec::new();
        loop {
            data.clear();
            let n = ctx
                .body
                .advance(down.io.unread(), Some(&mut data))
                .map_err(bad_request_body)?;
            down.io.consume(n);
            count_body(ctx, data.len())?;
            buffer.append(&data, b.memory, &b.temp_dir).map_err(|e| {
                Error::because(
                    ErrorType::InternalError,
                    "writing a request body to a temporary file",
                    e,
                )
            })?;
            if ctx.body.is_done() {
                break;
            }
            read_more_body(&mut down.io, t.client_read).await?;
        }
        ctx.buffered = Some(buffer);
        Ok(())
    }

    /// After a failed attempt: count it against the node when it says
    /// something about the node, and say whether another attempt may follow.
    fn retry_after_error(
        &self,
        head: &RequestHead,
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
        if e.esource() != &ErrorSource::Upstream || ctx.status.is_some() {
            return false;
        }
        let replayable = head.method.is_idempotent() && !ctx.replay_truncated;
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

    /// A node's connection that a request is done with goes back to the
    /// pool, or to the scraper when it waits to read the node's status
    /// page over one (`cluster::lend`).
    fn give_back(&self, node: &Node, stream: TcpStream, max_idle: Duration) {
        node.live.lend.note_pooled();
        let (stream, read_slot) = if node.live.lend.wanted() {
            let lent = Lent {
                stream,
                thread: std::thread::current().id(),
                max_idle,
                guard: node.live.begin_status_read(),
            };
            match node.live.lend.lend(lent) {
                Ok(()) => return,
                // The scraper stopped waiting: pooled, then the slot
                // counted for the read is given back.
                Err(Lent { stream, guard, .. }) => (stream, Some(guard)),
            }
        } else {
            (stream, None)
        };
        self.pool.put_held(
            node.config.address,
            stream,
            max_idle,
            Some(node.live.hold_idle()),
        );
        drop(read_slot);
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
            if let Some(event) = node.live.record_failure(&group.config, &e.to_string()) {
                event.log(group.name(), &node.config.name);
            }
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
    async fn fail(&self, down: &mut Downstream, e: &Error, ctx: &mut RequestCtx) {
        let code = status_for_error(e, ctx.last_failure == Some(Failure::Timeout));
        if ctx.retry_after.is_some() {
            // Overload (the group's queue): one line per request would
            // flood the log; the metrics count them.
            tracing::debug!(group = ctx.group_name(), "answered {code}: {e}");
        } else if code >= 500 {
            tracing::warn!(
                group = ctx.group_name(),
                tried = ctx.tried.len(),
                "answered {code}: {e}"
            );
        }
        if code > 0 && !ctx.sent_to_visitor {
            let body = ctx
                .error_body
                .take()
                .unwrap_or_else(|| respond::plain_body(code).to_owned());
            if let Err(err) = self.answer(down, ctx, code, &body, false).await {
                tracing::debug!("could not send the error response: {err}");
            }
        }
    }

    /// Metrics and the access log line of a finished request.
    fn log(&self, down: &Downstream, ctx: &RequestCtx) {
        let status = ctx.status.unwrap_or(0);
        let group = ctx.group_name();
        let node = ctx.node_name();
        let elapsed = clock::since(ctx.started);
        if status != 0 {
            self.metrics.record_protocol(down.head.version.as_str());
            match ctx.node_live() {
                Some(live) if node != "-" => {
                    self.metrics
                        .record_node_request(group, node, live, status, elapsed);
                    live.stats
                        .record_response(status, elapsed, ctx.body_read, ctx.body_sent);
                }
                // No node answered (`node_live` is None exactly when the
                // node's name is "-"), or one literally named "-".
                _ => self
                    .metrics
                    .requests
                    .with_label_values(&[group, node, code_class(status)])
                    .inc(),
            }
        }
        if let Some(log) = &self.access_log {
            let req = &down.head;
            let client = down.client.as_ref().map_or("-", |c| &*c.value);
            log.log(&Entry {
                client,
                method: req.method.as_str(),
                target: req.target(),
                version: req.version.as_str(),
                status,
                body_bytes: ctx.body_sent as usize,
                referer: req.fields.first_str(http1::Known::Referer).unwrap_or(""),
                user_agent: req.fields.first_str(http1::Known::UserAgent).unwrap_or(""),
                node: (node != "-").then_some((group, node)),
                upstream_time: ctx.upstream_time,
                total_time: elapsed,
            });
        }
    }
}

impl ServerApp for Proxy {
    /// Written out rather than with `#[async_trait]`, whose `async move`
    /// block would keep a second copy of the arguments beside the
    /// connection's future: the box made here is what every idle
    /// connection holds besides its task and socket, so a plain
    /// connection's box is `serve`'s future alone.
    fn process_new<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        stream: Stream,
        shutdown: &'life1 ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<Stream>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let local = stream_addresses(&stream).1;
        match local.and_then(|a| self.tls.as_ref()?.for_local(a)) {
            None => Box::pin(self.serve(stream, Arrival::plain(local), shutdown)),
            Some(terminator) => Box::pin(async move {
                // Boxed: the handshake's future is large (idle connections:
                // 8.9 KiB instead of 1.7; benches/README.md).
                let (stream, arrival) =
                    Box::pin(self.accept_tls(terminator, stream, local)).await?;
                // The one dispatch on the protocol ALPN chose (the list
                // offered is `crate::tls::alpn_protocols`). Boxed, as the
                // handshake: an HTTP/1 connection holds no room for it.
                if arrival.alpn() == Some(&ALPN::H2) {
                    Box::pin(self.serve_h2(stream, arrival, shutdown)).await;
                    return None;
                }
                self.serve(stream, arrival, shutdown).await
            }),
        }
    }
}

/// The framing header a node gets for the visitor's request: the length of
/// a body read whole, else the request's own framing as the proxy decided
/// it (a chunked body is chunked anew as it streams).
fn request_framing(head: &RequestHead, buffered: Option<&BodyBuffer>) -> Outgoing {
    match (buffered, head.body) {
        (Some(b), _) => Outgoing::Length(b.len()),
        (None, Framing::Chunked) => Outgoing::Chunked,
        (None, Framing::Length(n)) if n > 0 || head.declared.content_length.is_some() => {
            Outgoing::Length(n)
        }
        _ => Outgoing::None,
    }
}

/// How a node's response body goes to the visitor, and the framing header
/// the visitor gets: its length, or chunked anew (decoded for an HTTP/1.0
/// visitor, whose response then ends with the connection). A response that
/// frames no body (HEAD, 304) keeps the length the node declared; 1xx and
/// 204 get none (RFC 9110 8.6).
fn response_framing(
    framing: Framing,
    declared: http1::Declared,
    status: u16,
    http10: bool,
) -> (Recode, Outgoing) {
    match framing {
        Framing::Chunked if http10 => (Recode::Decode, Outgoing::None),
        Framing::Chunked => (Recode::Rechunk, Outgoing::Chunked),
        // Until the node closes: chunked for an HTTP/1.1 visitor, whose
        // connection can then go on (nginx does the same).
        Framing::UntilClose if http10 => (Recode::Same, Outgoing::None),
        Framing::UntilClose => (Recode::Rechunk, Outgoing::Chunked),
        Framing::Length(_) if (100..200).contains(&status) || status == 204 => {
            (Recode::Same, Outgoing::None)
        }
        Framing::Length(0) => match declared {
            http1::Declared {
                content_length: Some(n),
                ..
            } => (Recode::Same, Outgoing::Length(n)),
            http1::Declared { chunked: true, .. } if !http10 => (Recode::Same, Outgoing::Chunked),
            _ => (Recode::Same, Outgoing::None),
        },
        Framing::Length(n) => (Recode::Same, Outgoing::Length(n)),
    }
}

/// Send the request head in `out` and a body read whole to the node: the
/// head with the first piece in one write, the rest a piece at a time.
async fn send_buffered(
    node: &mut Io<TcpStream>,
    out: &mut Vec<u8>,
    buffer: &BodyBuffer,
    timeout: Duration,
) -> io::Result<()> {
    let mut scratch = Vec::new();
    let first = buffer.chunk(0, &mut scratch)?;
    let mut sent = first.len() as u64;
    out.extend_from_slice(first);
    node.write_all(out, timeout).await?;
    while sent < buffer.len() {
        let piece = buffer.chunk(sent, &mut scratch)?;
        if piece.is_empty() {
            break;
        }
        node.write_all(piece, timeout).await?;
        sent += piece.len() as u64;
    }
    Ok(())
}

/// `100 Continue` to a visitor that asked for it, once.
async fn continue_if_expected(down: &mut Downstream, ctx: &mut RequestCtx) -> Result<()> {
    if ctx.continued || !down.head.expects_continue() {
        return Ok(());
    }
    ctx.continued = true;
    let t = ctx.state.config.timeouts;
    down.io
        .send_continue(t.client_write)
        .await
        .map_err(|e| io_error(e, true, "writing to the visitor").into_down())
}

/// Count `n` more request body bytes against the route's limit.
fn count_body(ctx: &mut RequestCtx, n: usize) -> Result<()> {
    ctx.body_read += n as u64;
    if ctx.body_limit > 0 && ctx.body_read > ctx.body_limit {
        return Error::e_explain(
            ErrorType::HTTPStatus(413),
            "the request body is larger than max_request_body",
        );
    }
    Ok(())
}

/// Read the node's response body into the spool, as fast as the node sends
/// it while the spool has room, and meanwhile send the spool's bytes to the
/// visitor as fast as the visitor takes them. Returns when the node's body
/// has ended (the spool may still hold bytes for the visitor).
async fn read_response_body(
    down: &mut Downstream,
    node_io: &mut Io<TcpStream>,
    ctx: &mut RequestCtx,
    spool: &mut Spool,
    framing: Framing,
    recode: Recode,
    t: &Timeouts,
) -> Result<()> {
    let bad_body = |e| Error::because(ErrorType::InvalidHTTPHeader, "the node's body", e).into_up();
    let to_visitor = |e| io_error(e, true, "writing to the visitor").into_down();
    let temp_file = |e| {
        Error::because(
            ErrorType::InternalError,
            "writing a response to a temporary file",
            e,
        )
    };
    let state = Arc::clone(&ctx.state);
    let dir = &state.config.buffering.temp_dir;
    let mut body = Body::new(framing);
    let mut scratch = Vec::new();
    // Bytes the visitor's stream took but may hold in its write buffer.
    let mut unflushed = false;
    loop {
        let input = node_io.unread();
        if !input.is_empty() && !body.is_done() {
            let before = spool.pending();
            // A chunked body decoded or rechunked takes at most a few bytes
            // more than came.
            spool.room_for(input.len() + 16);
            let taken = spool
                .append_with(&mut scratch, dir, |out| {
                    http1::forward(&mut body, recode, input, out)
                })
                .map_err(bad_body)?
                .map_err(temp_file)?;
            ctx.body_sent += spool.pending() - before;
            node_io.consume(taken);
        }
        if body.is_done() {
            return Ok(());
        }
        let room = spool.has_room();
        if room {
            upstream::ack_promptly(node_io.get_ref());
        }
        let front = spool.front().map_err(temp_file)?;
        let writing = !front.is_empty();
        tokio::select! {
            biased;
            sent = down.io.send_step(front, t.client_write), if writing || unflushed => {
                match sent.map_err(to_visitor)? {
                    Some(n) => {
                        spool.consume(n);
                        unflushed = true;
                        ctx.sent_to_visitor = true;
                    }
                    None => unflushed = false,
                }
            }
            read = node_io.fill_with(t.read, BODY_READ), if room => {
                let read = read.map_err(|e| io_error(e, false, "reading the node's body").into_up())?;
                if read == 0 {
                    if !body.end_of_stream() {
                        return Err(Error::explain(
                            ErrorType::ConnectionClosed,
                            "the node closed the connection before the body ended",
                        )
                        .into_up());
                    }
                    if recode == Recode::Rechunk {
                        // A body that ran until the node closed, chunked
                        // for the visitor: its last chunk.
                        spool
                            .append_with(&mut scratch, dir, |out| {
                                out.extend_from_slice(b"0\r\n\r\n");
                                Ok::<(), http1::BadChunk>(())
                            })
                            .map_err(bad_body)?
                            .map_err(temp_file)?;
                    }
                }
            }
            // A spool without room holds bytes for the visitor: never here.
            else => return Error::e_explain(ErrorType::InternalError, "response spool stalled"),
        }
    }
}

/// Send what is left in the spool to the visitor.
async fn flush_spool(
    down: &mut Downstream,
    ctx: &mut RequestCtx,
    spool: &mut Spool,
    t: &Timeouts,
) -> Result<()> {
    let to_visitor = |e| io_error(e, true, "writing to the visitor").into_down();
    loop {
        let front = spool
            .front()
            .map_err(|e| Error::because(ErrorType::InternalError, "reading a temporary file", e))?;
        if front.is_empty() {
            return down.io.finish(t.client_write).await.map_err(to_visitor);
        }
        ctx.sent_to_visitor = true;
        down.io
            .write_body(front, t.client_write)
            .await
            .map_err(to_visitor)?;
        let n = front.len();
        spool.consume(n);
    }
}

/// Read more of the visitor's request body; an error when it closed the
/// connection before the body ended, or went quiet for `timeout`.
async fn read_more_body(io: &mut VisitorIo, timeout: Duration) -> Result<()> {
    let read = io
        .fill_body(timeout)
        .await
        .map_err(|e| io_error(e, false, "reading the request body").into_down())?;
    if read == 0 {
        return Err(Error::explain(
            ErrorType::ConnectionClosed,
            "the visitor closed the connection before the request body ended",
        )
        .into_down());
    }
    Ok(())
}

/// The addresses of a visitor's connection, as far as they are known: the
/// other end's and ours.
fn stream_addresses(
    stream: &Stream,
) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
    let digest = stream.get_socket_digest();
    let inet = |a: Option<&pingora::protocols::l4::socket::SocketAddr>| a?.as_inet().copied();
    let peer = digest.as_ref().and_then(|d| inet(d.peer_addr()));
    let local = digest.as_ref().and_then(|d| inet(d.local_addr()));
    (peer, local)
}

/// The plain TCP stream pingora accepted, to run a TLS handshake on (the
/// proxy's listeners are all plain TCP ones).
fn into_l4(stream: Stream) -> Option<pingora::protocols::l4::stream::Stream> {
    match stream
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
    {
        Ok(l4) => Some(*l4),
        Err(_) => {
            tracing::error!("a TLS listener's connection is not a TCP stream; closed");
            None
        }
    }
}

/// The address of the other end of a visitor's connection.
fn peer_address(stream: &Stream) -> Option<std::net::SocketAddr> {
    stream_addresses(stream).0
}

/// The visitor's address and the one it connected to: from its PROXY
/// header, else from its connection.
fn visitor_addresses(down: &Downstream) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
    if let Some(proxied) = down.client.as_ref().and_then(|c| c.proxied.as_deref()) {
        return Some(*proxied);
    }
    match down.io.addresses() {
        (Some(peer), Some(local)) => Some((peer, local)),
        _ => None,
    }
}

/// Read the PROXY protocol header a trusted source starts its connection
/// with: the addresses it gives, if any. Bounded by `timeout` in all.
async fn read_proxy_header(
    io: &mut Io<Stream>,
    timeout: Duration,
) -> std::result::Result<
    Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    proxy_protocol::BadHeader,
> {
    let deadline = clock::now() + timeout;
    loop {
        if let Some((n, addrs)) = proxy_protocol::parse(io.unread())? {
            io.consume(n);
            return Ok(addrs);
        }
        let left = deadline.saturating_duration_since(clock::now());
        match io.fill(left).await {
            Ok(0) => {
                return Err(proxy_protocol::BadHeader(
                    "closed before the header ended".into(),
                ))
            }
            Err(e) => return Err(proxy_protocol::BadHeader(e.to_string())),
            Ok(_) => {}
        }
    }
}

/// A visitor's request body whose chunked framing cannot be followed.
fn bad_request_body(e: http1::BadChunk) -> Box<Error> {
    Error::because(ErrorType::InvalidHTTPHeader, "the request body", e).into_down()
}

/// Move the request body bytes already read from the visitor to `out`,
/// keeping them for a retry.
fn take_buffered_body(io: &mut VisitorIo, ctx: &mut RequestCtx, out: &mut Vec<u8>) -> Result<()> {
    if ctx.body.is_done() || io.unread().is_empty() {
        return Ok(());
    }
    let input = io.unread();
    let from = out.len();
    let n = http1::forward_body(&mut ctx.body, input, out).map_err(bad_request_body)?;
    count_body(ctx, out.len() - from)?;
    ctx.sent_body(&out[from..]);
    io.consume(n);
    Ok(())
}

/// Whether a group's node connections each belong to one visitor
/// connection, and so are neither taken from the pool nor put back: their
/// PROXY protocol header named that visitor (HAProxy makes such
/// connections private too).
fn private_connections(group: &Group) -> bool {
    group.config.send_proxy_protocol.is_some()
}

/// Whether a node's connection goes back to the pool after a response, and
/// for how long at most.
///
/// On a node that holds a worker per connection (Apache prefork and
/// worker) an idle pooled connection keeps a worker from everyone else
/// (`K` on its scoreboard), and a proxy that holds more connections than the
/// node has workers leaves the extra ones in the node's accept backlog,
/// where requests hang until an idle connection is closed. So with `auto`
/// such a connection is counted against the node's limit
/// (`cluster::limit`) while it is pooled, and kept only while what this
/// proxy holds stays within that limit and the idle ones are no more than
/// the requests in flight (and for [`WORKER_NODE_IDLE`] at most, so that a
/// worker it holds goes back to the node's other clients soon), or while
/// requests wait in the queue; a request then reuses it instead of opening
/// a connection, and no request is sent past the limit (`cluster::queue`),
/// so none waits in the node's backlog. Without a limit (no fresh status,
/// no `max_conns`) it closes and its worker returns to the node's accept
/// queue at once. With `on` it is kept unless the node has more requests
/// than workers, some of which then wait in its backlog for the worker this
/// connection would hold.
fn pool_for(
    keepalive: UpstreamKeepalive,
    group: &Group,
    node: &crate::cluster::node::Node,
    idle: Duration,
) -> Option<Duration> {
    if private_connections(group) {
        return None;
    }
    match keepalive {
        UpstreamKeepalive::Off => None,
        UpstreamKeepalive::On => (!node_is_full(group, node)).then_some(idle),
        UpstreamKeepalive::Auto => {
            let h = node.live.holding(&group.config, &node.config, clock::now());
            if !h.worker_per_connection {
                return Some(idle);
            }
            // `inflight` still counts this request, whose connection this is.
            // Requests waiting in the group's queue take it at once: a
            // connection closed now would be replaced by a new one while
            // its worker is still on its way back to the node's accept
            // queue (and the count can be one high while another thread's
            // request is about to take an idle connection).
            // Otherwise no more idle than requests in flight (at least one):
            // an idle connection holds a worker that other clients, and
            // other webcluster instances, see busy on the status page.
            let others = h.inflight.saturating_sub(1);
            let keep = !group.queue.is_empty()
                || (limit::may_keep_idle(h.limit, others, h.idle) && h.idle < others.max(1));
            (h.limit.is_some() && keep).then_some(idle.min(WORKER_NODE_IDLE))
        }
    }
}

/// Whether a node that holds a worker per connection has more requests than
/// workers, by its last status and this proxy's requests since (the
/// current one counted): some of them then wait in its backlog.
fn node_is_full(group: &Group, node: &crate::cluster::node::Node) -> bool {
    node.live
        .worker_node_load(&group.config, &node.config, clock::now())
        .is_some_and(|load| load.capacity.is_some_and(|c| load.busy > f64::from(c)))
}

/// How long an idle pooled connection to a worker-per-connection node is
/// kept with `upstream_keepalive = "auto"`.
const WORKER_NODE_IDLE: Duration = Duration::from_secs(1);
