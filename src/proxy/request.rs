//! The request as the request path sees it, whatever protocol the visitor
//! speaks (as pingora's `Session` is): a head, a body source and a response
//! sink.
//!
//! The head is a [`RequestHead`]: method, target (path and query), `Host`
//! (an HTTP/2 `:authority` becomes it), the other header lines, the
//! protocol version, and the body's framing as the proxy decided it. An
//! HTTP/1 head is parsed in place from the visitor's bytes; an HTTP/2 head
//! is built from the stream's checked fields (`http2::head`). The
//! hop-by-hop and framing lines of either never reach a node:
//! `upstream::write_request_head` writes the node's head with exactly one
//! framing header of the proxy's own.
//!
//! The body source and response sink are [`VisitorIo`]: the visitor's
//! HTTP/1 connection, or one HTTP/2 stream. Everything after the head
//! (routing, the status-path guard, node choice and admission, retries,
//! `retry_on_404`, primary writes, buffering, the node's side, the access
//! log and the metrics) is the one path in `proxy/mod.rs`, which calls
//! these methods where bytes meet the visitor:
//! - the body comes as bytes in the head's framing ([`VisitorIo::unread`],
//!   [`VisitorIo::consume`], [`VisitorIo::fill_body`]): an HTTP/2 request
//!   without `content-length` is framed as chunked, which the request path
//!   decodes (request buffering) or chunks anew for the node, exactly as it
//!   does for an HTTP/1 chunked body;
//! - the response goes as a head ([`VisitorIo::start_response`]), body
//!   pieces ([`VisitorIo::send_step`], [`VisitorIo::write_body`]) and an
//!   end ([`VisitorIo::finish`]); trailers from nodes are not forwarded;
//! - a local answer (403, 502 ...) is [`VisitorIo::answer`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use pingora::protocols::Stream;

use super::downstream::{write_response_head, Shape};
use super::http1::{Io, ResponseHead};
use super::http2::{Cancellation, StreamIo};
use super::respond::{plain_response_retry, redirect_response};

/// How much one read of a visitor's request body asks for (HTTP/1).
const BODY_READ: usize = 64 * 1024;

/// A local answer: a short plain-text body with a status, and a
/// `Location` for a redirect.
pub struct Answer<'a> {
    pub code: u16,
    pub body: &'a str,
    pub location: Option<&'a str>,
    /// An HTTP/1 connection stays open after it.
    pub keep: bool,
    /// The answer to a HEAD request: no body (RFC 9110 9.3.2).
    pub head_only: bool,
    /// A `Retry-After` (seconds): the queue's 503s.
    pub retry_after: Option<u64>,
}

/// The visitor's side of one request: its HTTP/1 connection, or its HTTP/2
/// stream.
pub enum VisitorIo {
    Http1(Io<Stream>),
    Http2(Box<StreamIo>),
}

impl VisitorIo {
    /// The HTTP/1 connection, when the visitor speaks HTTP/1.
    pub fn http1(&mut self) -> Option<&mut Io<Stream>> {
        match self {
            VisitorIo::Http1(io) => Some(io),
            VisitorIo::Http2(_) => None,
        }
    }

    pub fn is_http2(&self) -> bool {
        matches!(self, VisitorIo::Http2(_))
    }

    /// Request bytes received and not consumed yet (after the head: the
    /// body, in the head's framing).
    pub fn unread(&self) -> &[u8] {
        match self {
            VisitorIo::Http1(io) => io.unread(),
            VisitorIo::Http2(s) => s.unread(),
        }
    }

    /// Mark `n` bytes of [`VisitorIo::unread`] as used.
    pub fn consume(&mut self, n: usize) {
        match self {
            VisitorIo::Http1(io) => io.consume(n),
            VisitorIo::Http2(s) => s.consume(n),
        }
    }

    /// Receive more of the request body; 0 when the visitor's side ended.
    pub async fn fill_body(&mut self, timeout: Duration) -> io::Result<usize> {
        match self {
            VisitorIo::Http1(io) => io.fill_with(timeout, BODY_READ).await,
            VisitorIo::Http2(s) => s.fill(timeout).await,
        }
    }

    /// `100 Continue`, to a visitor that sent `Expect: 100-continue`.
    pub async fn send_continue(&mut self, timeout: Duration) -> io::Result<()> {
        match self {
            VisitorIo::Http1(io) => {
                io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n", timeout)
                    .await
            }
            VisitorIo::Http2(s) => s.send_continue(),
        }
    }

    /// A short plain-text local answer, the whole response. `out` is
    /// scratch space.
    pub async fn answer(
        &mut self,
        out: &mut Vec<u8>,
        answer: &Answer<'_>,
        timeout: Duration,
    ) -> io::Result<()> {
        match self {
            VisitorIo::Http1(io) => {
                out.clear();
                let body = match answer.location {
                    Some(location) => redirect_response(out, location, answer.keep),
                    None => {
                        plain_response_retry(
                            out,
                            answer.code,
                            answer.body,
                            answer.keep,
                            answer.retry_after,
                        );
                        answer.body.len()
                    }
                };
                if answer.head_only {
                    out.truncate(out.len().saturating_sub(body));
                }
                io.write_all(out, timeout).await
            }
            VisitorIo::Http2(s) => s.answer(answer),
        }
    }

    /// Begin the response with the node's head as the visitor gets it:
    /// appended to `out` for HTTP/1 (sent with the first body bytes), sent
    /// at once on HTTP/2 (`no_body`: the stream ends with it).
    /// `hsts`: a `Strict-Transport-Security` value to add.
    pub fn start_response<'a>(
        &mut self,
        out: &mut Vec<u8>,
        resp: &ResponseHead,
        shape: &Shape,
        cookies: impl Iterator<Item = &'a String>,
        hsts: Option<&str>,
        no_body: bool,
    ) -> io::Result<()> {
        match self {
            VisitorIo::Http1(_) => {
                write_response_head(out, resp, shape, cookies, hsts);
                Ok(())
            }
            VisitorIo::Http2(s) => s.send_head(resp, shape, cookies, hsts, no_body),
        }
    }

    /// Send some of `data` (`Some(bytes taken)`), or when there is none,
    /// flush what the connection holds (`None`). Cancel-safe.
    pub async fn send_step(&mut self, data: &[u8], timeout: Duration) -> io::Result<Option<usize>> {
        match self {
            VisitorIo::Http1(io) if data.is_empty() => io.flush(timeout).await.map(|()| None),
            VisitorIo::Http1(io) => io.write_some(data, timeout).await.map(Some),
            VisitorIo::Http2(_) if data.is_empty() => Ok(None),
            VisitorIo::Http2(s) => s.send_some(data, timeout).await.map(Some),
        }
    }

    /// Send all of `data`.
    pub async fn write_body(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        match self {
            VisitorIo::Http1(io) => io.write_all(data, timeout).await,
            VisitorIo::Http2(s) => {
                let mut sent = 0;
                while sent < data.len() {
                    sent += s.send_some(&data[sent..], timeout).await?;
                }
                Ok(())
            }
        }
    }

    /// The response is whole: flush it (HTTP/1), end the stream (HTTP/2).
    pub async fn finish(&mut self, timeout: Duration) -> io::Result<()> {
        match self {
            VisitorIo::Http1(io) => io.flush(timeout).await,
            VisitorIo::Http2(s) => s.finish(),
        }
    }

    /// How the visitor may cancel this request while it is being served
    /// (an HTTP/2 stream reset), if it can.
    pub fn cancellation(&self) -> Option<Cancellation> {
        match self {
            VisitorIo::Http1(_) => None,
            VisitorIo::Http2(s) => Some(s.cancellation()),
        }
    }

    /// Whether the visitor cancelled the request.
    pub fn is_cancelled(&self) -> bool {
        match self {
            VisitorIo::Http1(_) => false,
            VisitorIo::Http2(s) => s.is_cancelled(),
        }
    }

    /// The addresses of the visitor's connection: the other end's and ours.
    pub fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        match self {
            VisitorIo::Http1(io) => super::stream_addresses(io.get_ref()),
            VisitorIo::Http2(s) => s.addresses(),
        }
    }
}
