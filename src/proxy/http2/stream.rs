//! One HTTP/2 stream as the request path's body source and response sink
//! (`request::VisitorIo::Http2`): DATA frames become body bytes in the
//! head's framing, with flow-control capacity given back as they are
//! taken; the node's response goes as a HEADERS frame without the
//! connection-specific fields (RFC 9113 8.2.2), DATA frames sent only as
//! the visitor's window allows, and END_STREAM. A stream left before its
//! response ended (the node closed mid-body, the request failed after the
//! head went) is reset, so that the visitor never takes a cut body for a
//! whole one.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, SET_COOKIE};

use crate::clock;
use crate::proxy::downstream::{visitor_gets, Shape};
use crate::proxy::http1::{consume, ConnectionNamed, Known, Outgoing, ResponseHead};
use crate::proxy::request::Answer;

/// Where a stream's response is.
pub enum Sending {
    /// Nothing sent yet.
    Head(SendResponse<Bytes>),
    /// The head went; the body is being sent.
    Body(SendStream<Bytes>),
    /// The stream ended (or was reset).
    Done,
}

/// The response side of a stream, shared by the request path and the
/// watch for the visitor's reset (both in the stream's one task; the lock
/// is never held across a wait).
pub type SharedSending = Arc<Mutex<Sending>>;

pub fn lock(s: &Mutex<Sending>) -> MutexGuard<'_, Sending> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The watch for a stream's reset (by the visitor, or by the `h2` crate
/// for the visitor's protocol error) before its response ended.
pub struct Cancellation {
    send: SharedSending,
    cancelled: Arc<AtomicBool>,
}

impl Cancellation {
    /// Resolves when the stream is reset (or its connection failed).
    pub async fn cancelled(&self) {
        std::future::poll_fn(|cx| match &mut *lock(&self.send) {
            Sending::Head(r) => r.poll_reset(cx).map(|_| ()),
            Sending::Body(s) => s.poll_reset(cx).map(|_| ()),
            Sending::Done => Poll::Pending,
        })
        .await;
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

/// One HTTP/2 stream, seen by the request path.
pub struct StreamIo {
    body: RecvStream,
    /// Body bytes received and not taken yet, in the head's framing.
    buf: Vec<u8>,
    start: usize,
    /// The request has no `content-length`: its DATA is framed here as
    /// HTTP/1 chunks, which the request path reads as any chunked body.
    chunked: bool,
    /// END_STREAM came (or the body was given up).
    ended: bool,
    send: SharedSending,
    /// The stream was reset before its response ended.
    cancelled: Arc<AtomicBool>,
    addresses: (Option<SocketAddr>, Option<SocketAddr>),
    /// The response body bytes still to send, when its length is known:
    /// the DATA frame that completes it carries END_STREAM (no empty DATA
    /// frame after it, as nginx and HAProxy do).
    left: Option<u64>,
}

fn closed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_owned())
}

fn h2_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io().unwrap_or_else(|| closed("HTTP/2 connection"))
    } else {
        io::Error::other(e)
    }
}

impl StreamIo {
    pub fn new(
        body: RecvStream,
        chunked: bool,
        send: SharedSending,
        addresses: (Option<SocketAddr>, Option<SocketAddr>),
    ) -> StreamIo {
        let ended = body.is_end_stream();
        StreamIo {
            body,
            buf: Vec::new(),
            start: 0,
            chunked,
            ended: ended && !chunked,
            send,
            cancelled: Arc::default(),
            addresses,
            left: None,
        }
    }

    pub fn cancellation(&self) -> Cancellation {
        Cancellation {
            send: Arc::clone(&self.send),
            cancelled: Arc::clone(&self.cancelled),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn consume(&mut self, n: usize) {
        consume(&mut self.buf, &mut self.start, n);
    }

    pub fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.addresses
    }

    /// The next DATA frame's bytes after the unread ones: how many bytes
    /// were added, 0 at the end of the stream. Its flow-control capacity
    /// goes back to the visitor at once: what the stream holds is bounded
    /// by its window, what this holds by one frame, as the request path
    /// takes each before it asks for more.
    pub async fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        loop {
            let next = clock::within(timeout, self.body.data())
                .await
                .map_err(io::Error::from)?;
            let before = self.buf.len();
            match next {
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.buf.extend_from_slice(b"0\r\n\r\n");
                    }
                    return Ok(self.buf.len() - before);
                }
                Some(Err(e)) => return Err(h2_error(e)),
                Some(Ok(data)) => {
                    let _ = self.body.flow_control().release_capacity(data.len());
                    if data.is_empty() {
                        continue;
                    }
                    if self.chunked {
                        self.buf
                            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        self.buf.extend_from_slice(&data);
                        self.buf.extend_from_slice(b"\r\n");
                    } else {
                        self.buf.extend_from_slice(&data);
                    }
                    return Ok(self.buf.len() - before);
                }
            }
        }
    }

    /// An interim `100 Continue` (RFC 9113 8.1).
    pub fn send_continue(&mut self) -> io::Result<()> {
        let mut resp = http::Response::new(());
        *resp.status_mut() = http::StatusCode::CONTINUE;
        match &mut *lock(&self.send) {
            Sending::Head(r) => r.send_informational(resp).map_err(h2_error),
            _ => Ok(()),
        }
    }

    /// A short plain-text local answer, the whole response.
    pub fn answer(&mut self, answer: &Answer<'_>) -> io::Result<()> {
        let body = answer.body;
        let mut resp = http::Response::new(());
        *resp.status_mut() = http::StatusCode::from_u16(answer.code)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        if let Some(location) = answer.location {
            let value = HeaderValue::from_str(location)
                .map_err(|_| io::Error::other("a Location that is no header value"))?;
            h.insert(http::header::LOCATION, value);
        }
        if let Some(secs) = answer.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        let mut send = lock(&self.send);
        let Sending::Head(respond) = std::mem::replace(&mut *send, Sending::Done) else {
            return Err(closed("the response was already started"));
        };
        let mut respond = respond;
        let no_body = body.is_empty() || answer.head_only;
        let mut stream = respond.send_response(resp, no_body).map_err(h2_error)?;
        if !no_body {
            // Small: buffered by the connection whatever the window.
            stream
                .send_data(Bytes::copy_from_slice(body.as_bytes()), true)
                .map_err(h2_error)?;
        }
        Ok(())
    }

    /// Send the node's response head (RFC 9113 8.2.2: no
    /// connection-specific fields; the length, if any, as the proxy
    /// decided it).
    pub fn send_head<'a>(
        &mut self,
        resp: &ResponseHead,
        shape: &Shape,
        cookies: impl Iterator<Item = &'a String>,
        hsts: Option<&str>,
        no_body: bool,
    ) -> io::Result<()> {
        let mut out = http::Response::new(());
        *out.status_mut() = http::StatusCode::from_u16(resp.status)
            .map_err(|_| io::Error::other("the node's status is out of range"))?;
        // Sized once for the node's lines and the proxy's (it would grow
        // twice for a dozen lines).
        *out.headers_mut() = http::HeaderMap::with_capacity(resp.fields.len() + 4);
        let h = out.headers_mut();
        let named = ConnectionNamed::of(&resp.fields);
        for (known, name, value) in resp.fields.iter_known() {
            if !visitor_gets(known, name, &named, false) || known == Known::Te {
                continue;
            }
            // httparse let through only valid names and values; any other
            // stays with the node.
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                h.append(name, value);
            }
        }
        if let Outgoing::Length(n) = shape.framing {
            // The node's own framing lines were not copied (`visitor_gets`):
            // this is the one `content-length`, appended without a search.
            h.append(CONTENT_LENGTH, HeaderValue::from(n));
        }
        for cookie in cookies {
            if let Ok(v) = HeaderValue::from_str(cookie) {
                h.append(SET_COOKIE, v);
            }
        }
        if let Some(v) = hsts.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(http::header::STRICT_TRANSPORT_SECURITY, v);
        }
        let mut send = lock(&self.send);
        let Sending::Head(respond) = std::mem::replace(&mut *send, Sending::Done) else {
            return Err(closed("the response was already started"));
        };
        let mut respond = respond;
        let stream = respond.send_response(out, no_body).map_err(h2_error)?;
        if !no_body {
            *send = Sending::Body(stream);
            self.left = match shape.framing {
                Outgoing::Length(n) => Some(n),
                _ => None,
            };
        }
        Ok(())
    }

    /// Send as much of `data` as the visitor's flow-control window allows
    /// now, waiting for some window at most `timeout`: how many bytes went.
    /// The stream's send buffer is bounded (`max_send_buffer_size`), so a
    /// slow visitor holds a bounded amount here. Cancel-safe: bytes are
    /// taken only in the poll that returns.
    pub async fn send_some(&mut self, data: &[u8], timeout: Duration) -> io::Result<usize> {
        let send = &self.send;
        let left = self.left;
        let wait = std::future::poll_fn(|cx| {
            let mut guard = lock(send);
            let Sending::Body(s) = &mut *guard else {
                return Poll::Ready(Err(closed("the response stream ended")));
            };
            s.reserve_capacity(data.len());
            loop {
                let capacity = s.capacity();
                if capacity > 0 {
                    let n = capacity.min(data.len());
                    let piece = Bytes::copy_from_slice(&data[..n]);
                    let last = left == Some(n as u64);
                    let sent = s.send_data(piece, last).map(|()| n).map_err(h2_error);
                    if last && sent.is_ok() {
                        // Ended: `finish` has nothing left to send.
                        *guard = Sending::Done;
                    }
                    return Poll::Ready(sent);
                }
                match s.poll_capacity(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        return Poll::Ready(Err(closed("the visitor's stream closed")))
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(h2_error(e))),
                    Poll::Ready(Some(Ok(_))) => {}
                }
            }
        });
        let sent = clock::within(timeout, wait)
            .await
            .unwrap_or_else(|elapsed| Err(elapsed.into()))?;
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(sent as u64);
        }
        Ok(sent)
    }

    /// End the response's stream.
    pub fn finish(&mut self) -> io::Result<()> {
        let mut send = lock(&self.send);
        match std::mem::replace(&mut *send, Sending::Done) {
            Sending::Body(mut s) => s.send_data(Bytes::new(), true).map_err(h2_error),
            Sending::Done => Ok(()),
            Sending::Head(r) => {
                *send = Sending::Head(r);
                Err(closed("no response head was sent"))
            }
        }
    }
}

impl Drop for StreamIo {
    /// A response not ended resets the stream: the visitor must not take
    /// a cut body for a whole one (as when an HTTP/1 connection closes
    /// before the length it was given).
    fn drop(&mut self) {
        match std::mem::replace(&mut *lock(&self.send), Sending::Done) {
            Sending::Head(mut r) => r.send_reset(Reason::INTERNAL_ERROR),
            Sending::Body(mut s) => s.send_reset(Reason::INTERNAL_ERROR),
            Sending::Done => {}
        }
    }
}
