//! HTTP/2 from visitors (RFC 9113), with the `h2` crate (the one hyper and
//! pingora use): one connection's frames, settings and abuse limits here;
//! each stream is one request through the same request path as HTTP/1
//! (`request::VisitorIo::Http2`), so routes, the status-path guard, node
//! choice, retries, `retry_on_404`, primary writes, buffering, the access
//! log and the metrics are the same code. Nodes are still spoken to in
//! HTTP/1.1, with the proxy's own framing.
//!
//! Why the `h2` crate itself rather than pingora's `v2::server` sessions:
//! pingora's loop that accepts streams is crate-private, and its
//! `HttpSession` would put a second request type (header maps, its own
//! body and response calls) in front of the request path; here a stream's
//! head becomes the same `RequestHead` as an HTTP/1 one and its body and
//! response the same `VisitorIo` calls. pingora's own h2 code is this
//! crate underneath.
//!
//! Where HTTP/2 comes in: a TLS listener that negotiated ALPN `h2` calls
//! [`Proxy::serve_h2`]; a plain listener recognises the client preface
//! (HTTP/2 with prior knowledge, "h2c", as nginx's `listen ... http2` and
//! HAProxy do) at the start of a connection and hands the bytes it read
//! on. There is no HTTP/1.1 `Upgrade: h2c` (nginx has none either).
//!
//! Limits: `[limits] http2_max_concurrent_streams` (100) concurrent
//! streams; the header list at most
//! `[limits] max_request_head`; a connection with no stream for
//! `client_keepalive` gets GOAWAY and closes; windows of [`STREAM_WINDOW`]
//! and [`CONNECTION_WINDOW`], capacity given back as the request path takes
//! the bytes, and a send buffer of [`SEND_BUFFER`] per stream, so a slow
//! node or visitor holds a bounded amount. Floods: streams reset before
//! they were accepted (rapid reset, CVE-2023-44487) and streams the proxy
//! had to reset for the visitor's errors (MadeYouReset, CVE-2025-8671)
//! are bounded by the `h2` crate's counters, which end the connection with
//! ENHANCE_YOUR_CALM; a stream reset by the visitor while its request is
//! with a node drops that request (the node's connection closes, it is not
//! pooled), and a connection whose reset and malformed streams number more
//! than [`MAX_GLITCHES`] and more than its completed ones is ended the same
//! way. SIGTERM and a binary upgrade send GOAWAY and let open streams
//! finish (a config reload needs none: each request reads the live
//! config).

mod head;
mod stream;

pub use head::{request_head, Refusal};
pub use stream::{Cancellation, StreamIo};

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
// tokio's clock: the one its timers run on (and that tests can pause).
use tokio::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::downstream::Downstream;
use super::http1::{Io, RequestHead, ResponseHead};
use super::request::VisitorIo;
use super::upstream::Visitor;
use super::{head_limits, stream_addresses, ActiveGuard, Arrival, Proxy};
use crate::cluster::Cluster;
use stream::Sending;

/// The client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Each stream's receive window: a request body this large comes without
/// waiting for the proxy.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// The connection's receive window: all its streams' unread bodies.
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes buffered per stream for a slow visitor.
pub const SEND_BUFFER: usize = 64 * 1024;
/// Streams reset by the visitor before they were accepted, at once (the
/// `h2` crate's rapid-reset bound; its default).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the proxy reset for the visitor's protocol errors, over the
/// connection's life (the `h2` crate's MadeYouReset bound; its default).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Streams a connection may reset or send malformed (when they also
/// outnumber the ones it completed) before it is ended.
pub const MAX_GLITCHES: u64 = 100;
/// How long a connection told to go away may linger with no stream before
/// it is closed (a visitor that never acknowledges the GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What the start of a connection says about its protocol.
pub enum Sniffed {
    Http2,
    Http1,
    Closed,
}

/// Whether the connection starts with the HTTP/2 preface. Reads only
/// while what came is a beginning of it: an HTTP/1 request differs from
/// its first byte, and its bytes stay unread for the HTTP/1 reader.
pub async fn sniff(io: &mut Io<Stream>, timeout: Duration) -> Sniffed {
    loop {
        let unread = io.unread();
        let n = unread.len().min(PREFACE.len());
        if unread[..n] != PREFACE[..n] {
            return Sniffed::Http1;
        }
        if n == PREFACE.len() {
            return Sniffed::Http2;
        }
        match io.fill(timeout).await {
            Ok(0) | Err(_) if n == 0 => return Sniffed::Closed,
            // A part of the preface and no more: the HTTP/1 side answers it.
            Ok(0) | Err(_) => return Sniffed::Http1,
            Ok(_) => {}
        }
    }
}

/// A connection with bytes already read from it put back before what
/// comes next.
struct Rewind<S> {
    read: Vec<u8>,
    pos: usize,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.read.len() {
            let n = (self.read.len() - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.read[from..from + n]);
            self.pos += n;
            if self.pos == self.read.len() {
                self.read = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// One connection's state shared with its streams' tasks.
struct Conn {
    client: Option<Visitor>,
    /// How the connection came (TLS or not, our port): each stream's.
    arrival: Arrival,
    addresses: (Option<SocketAddr>, Option<SocketAddr>),
    /// Streams being served.
    active: AtomicUsize,
    /// Streams whose response ended.
    completed: AtomicU64,
    /// Streams reset by the visitor before their response ended, or
    /// refused as malformed.
    glitches: AtomicU64,
    /// When the last stream ended (or the connection began).
    last_end: Mutex<Instant>,
}

impl Conn {
    fn too_many_glitches(&self) -> bool {
        let glitches = self.glitches.load(Ordering::Relaxed);
        glitches > MAX_GLITCHES && glitches > self.completed.load(Ordering::Relaxed)
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(*self.last_end.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Counts a stream as served while it lives.
struct StreamGuard(Arc<Conn>, Arc<Cluster>);

impl StreamGuard {
    fn new(conn: &Arc<Conn>, cluster: &Arc<Cluster>) -> StreamGuard {
        conn.active.fetch_add(1, Ordering::Relaxed);
        let v = &cluster.visitors;
        v.http2_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(Arc::clone(conn), Arc::clone(cluster))
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        let v = &self.1.visitors;
        v.http2_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a connection as open while it lives.
struct ConnGuard(Arc<Cluster>);

impl ConnGuard {
    fn new(cluster: &Arc<Cluster>) -> ConnGuard {
        let v = &cluster.visitors;
        v.http2_connections.fetch_add(1, Ordering::Relaxed);
        ConnGuard(Arc::clone(cluster))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let v = &self.0.visitors;
        v.http2_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Proxy {
    /// Serve one HTTP/2 connection (a TLS connection that negotiated ALPN
    /// `h2`): each stream is one request through the request path; returns
    /// when the connection is closed. A reload, or `shutdown` turning true
    /// (SIGTERM, upgrade), sends GOAWAY and lets open streams finish.
    pub async fn serve_h2(
        self: &Arc<Self>,
        stream: Stream,
        arrival: Arrival,
        shutdown: &ShutdownWatch,
    ) {
        let client = match arrival.proxy_header.as_deref() {
            Some(Some((source, destination))) => Some(Visitor::proxied(*source, *destination)),
            _ => stream_addresses(&stream).0.map(|a| Visitor::new(a.ip())),
        };
        self.serve_h2_after(stream, Vec::new(), client, arrival, shutdown)
            .await;
    }

    /// [`Proxy::serve_h2`] on a connection of which `read` (the preface and
    /// what followed it) was read already, by a visitor known as `client`.
    pub(super) async fn serve_h2_after(
        self: &Arc<Self>,
        stream: Stream,
        read: Vec<u8>,
        client: Option<Visitor>,
        arrival: Arrival,
        shutdown: &ShutdownWatch,
    ) {
        let addresses = stream_addresses(&stream);
        let state = self.cluster.state();
        let t = state.config.timeouts;
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(state.config.limits.http2_max_concurrent_streams)
            .max_header_list_size(state.config.limits.max_request_head.min(u32::MAX as usize) as u32)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(SEND_BUFFER)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
        drop(state);
        let io = Rewind {
            read,
            pos: 0,
            io: stream,
        };
        let mut conn = match tokio::time::timeout(t.client_read, builder.handshake(io)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!(client = ?client.as_ref().map(|c| c.ip), "HTTP/2 handshake: {e}");
                self.metrics.bad_requests.inc();
                return;
            }
            Err(_) => return,
        };
        let _counted = ConnGuard::new(&self.cluster);
        // Once told to go away, the connection counts as a request in
        // flight until it is closed: a graceful stop then waits for its
        // streams' last frames to be sent, not only for their requests.
        let mut draining: Option<ActiveGuard> = None;
        let shared = Arc::new(Conn {
            client,
            arrival,
            addresses,
            active: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            glitches: AtomicU64::new(0),
            last_end: Mutex::new(Instant::now()),
        });
        let mut shutdown_rx = shutdown.clone();
        // A reload sends GOAWAY too (new requests then come on a new
        // connection, under the new config and certificates); open streams
        // finish. Not counted as in flight: the process goes on.
        let mut reloads = self.cluster.reloads();
        let mut closing: Option<Instant> = None;
        if *shutdown.borrow() {
            conn.graceful_shutdown();
            closing = Some(Instant::now());
            draining = Some(ActiveGuard::new(&self.active));
        }
        // One timer for the connection's life, moved only when its
        // deadline changes (not made anew for each stream).
        let timer = tokio::time::sleep_until(Instant::now() + Duration::from_secs(1));
        tokio::pin!(timer);
        loop {
            let keepalive = self
                .cluster
                .state()
                .config
                .timeouts
                .client_keepalive
                .max(Duration::from_secs(1));
            let wake = match (closing, shared.idle_since()) {
                (Some(since), Some(idle)) => since.max(idle) + CLOSE_GRACE,
                (None, Some(idle)) => idle + keepalive,
                // Streams open: a look once in a while (the last of them
                // may end with nothing else to wake this loop).
                (_, None) if timer.deadline() > Instant::now() => timer.deadline(),
                (_, None) => Instant::now() + keepalive,
            };
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                biased;
                changed = shutdown_rx.changed(), if closing.is_none() => {
                    if changed.is_err() || *shutdown_rx.borrow() {
                        conn.graceful_shutdown();
                        closing = Some(Instant::now());
                        draining = Some(ActiveGuard::new(&self.active));
                    }
                }
                _ = reloads.changed(), if closing.is_none() => {
                    conn.graceful_shutdown();
                    closing = Some(Instant::now());
                }
                next = conn.accept() => match next {
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(client = ?shared.client.as_ref().map(|c| c.ip), "HTTP/2 connection: {e}");
                        break;
                    }
                    Some(Ok((req, respond))) => {
                        if shared.too_many_glitches() {
                            tracing::info!(
                                client = ?shared.client.as_ref().map(|c| c.ip),
                                "ended an HTTP/2 connection: too many reset or malformed streams"
                            );
                            conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                            closing = Some(Instant::now());
                            continue;
                        }
                        let guard = StreamGuard::new(&shared, &self.cluster);
                        let proxy = Arc::clone(self);
                        let shutdown = shutdown.clone();
                        tokio::spawn(crate::clock::clocked(async move {
                            proxy.serve_stream(req, respond, &guard.0, shutdown).await;
                            drop(guard);
                        }));
                    }
                },
                () = &mut timer => {
                    match (closing, shared.idle_since()) {
                        (Some(since), Some(idle)) if since.max(idle).elapsed() >= CLOSE_GRACE => break,
                        (None, Some(idle)) if idle.elapsed() >= keepalive => {
                            conn.graceful_shutdown();
                            closing = Some(Instant::now());
                        }
                        _ => {}
                    }
                }
            }
        }
        drop(draining);
    }

    /// One stream: its head checked, then the request path; the request is
    /// dropped if the visitor resets the stream first.
    async fn serve_stream(
        &self,
        req: http::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        conn: &Conn,
        shutdown: ShutdownWatch,
    ) {
        let state = self.cluster.state();
        let limits = head_limits(&state.config, true);
        let (parts, body) = req.into_parts();
        let mut head = RequestHead::default();
        let chunked = match request_head(&parts, body.is_end_stream(), &limits, &mut head) {
            Ok(chunked) => chunked,
            Err(refusal) => {
                tracing::debug!(client = ?conn.client.as_ref().map(|c| c.ip), "refused: {refusal}");
                self.metrics.bad_requests.inc();
                conn.glitches.fetch_add(1, Ordering::Relaxed);
                match refusal {
                    Refusal::Malformed(_) => respond.send_reset(Reason::PROTOCOL_ERROR),
                    Refusal::TooLarge => {
                        let mut resp = http::Response::new(());
                        *resp.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                        let _ = respond.send_response(resp, true);
                    }
                }
                return;
            }
        };
        drop(parts);
        let send = Arc::new(Mutex::new(Sending::Head(respond)));
        let io = StreamIo::new(body, chunked, send, conn.addresses);
        let mut down = Downstream {
            io: VisitorIo::Http2(Box::new(io)),
            head,
            resp: ResponseHead::default(),
            out: Vec::new(),
            client: conn.client.clone(),
            shutdown,
            arrival: conn.arrival.clone(),
        };
        Box::pin(self.handle(&mut down, state, true)).await;
        if down.io.is_cancelled() {
            tracing::debug!(
                client = ?conn.client.as_ref().map(|c| c.ip),
                "the visitor reset its stream: its request is dropped"
            );
            conn.glitches.fetch_add(1, Ordering::Relaxed);
        } else {
            conn.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
