//! The visitor's side of a connection: its stream and buffers, what an
//! HTTP/1 connection keeps between two requests ([`Idle`]) and the wait
//! for the next one, reading its request heads (with the keep-alive and
//! head timeouts), and the response head it gets: the node's, without the
//! hop-by-hop headers, with the connection's fate said and the session
//! cookies added.

use std::time::Duration;

use pingora::protocols::Stream;

use super::http1::{
    empty_lines, put_header, put_status_line, ConnectionNamed, HeadEnd, HeadError, Io, Known,
    Limits, Outgoing, RequestHead, ResponseHead,
};
use super::request::VisitorIo;
use super::upstream::Visitor;
use crate::clock;

/// One visitor request's side: its HTTP/1 connection (kept from one
/// request to the next) or HTTP/2 stream, the current request's head, the
/// node's response head, and the buffer outgoing heads are composed in.
pub struct Downstream {
    pub io: VisitorIo,
    pub head: RequestHead,
    pub resp: ResponseHead,
    pub out: Vec<u8>,
    pub client: Option<Visitor>,
    /// Turns true when the server starts to stop: a response then tells
    /// the visitor the connection closes after it.
    pub shutdown: pingora::server::ShutdownWatch,
    /// How the connection came: TLS or not, our port.
    pub arrival: super::Arrival,
}

/// What a visitor's HTTP/1 connection keeps between two requests: its
/// stream with the bytes read and not used yet (pipelined requests), the
/// visitor, how it arrived, the stop signal. A request's own state (its
/// heads and buffers, the request path's future) is made when its first
/// bytes came and dropped after its response, so that an idle keep-alive
/// connection holds only this and the wait for those bytes (`Io::wait`
/// and the stop signal, in `Proxy::serve`; `benches/README.md`, "Idle
/// connections at 1.0x HAProxy's memory").
///
/// A request takes the stream, the visitor and the arrival into its
/// [`Downstream`] and gives them back ([`Idle::take`], [`Idle::give_back`]):
/// the `Idle` stays where it is, in the connection's future (moved whole
/// to and from each request, it cost about 300 instructions of copies per
/// request).
pub struct Idle {
    /// `None` only while a request has it (as `shutdown`).
    pub io: Option<Io<Stream>>,
    pub client: Option<Visitor>,
    pub arrival: super::Arrival,
    /// Taken by a request rather than cloned: a clone and its drop are
    /// four atomic operations per request.
    pub shutdown: Option<pingora::server::ShutdownWatch>,
}

impl Idle {
    /// Whether the server is stopping.
    pub fn stopping(&self) -> bool {
        self.shutdown.as_ref().is_some_and(|s| *s.borrow())
    }

    /// The connection's side of its next request (`None`: the connection
    /// is gone, which a request that ended it does not give back).
    #[inline]
    pub fn take(&mut self) -> Option<Downstream> {
        Some(Downstream {
            io: VisitorIo::Http1(self.io.take()?),
            head: RequestHead::default(),
            resp: ResponseHead::default(),
            out: Vec::new(),
            client: self.client.take(),
            shutdown: self.shutdown.take()?,
            arrival: std::mem::take(&mut self.arrival),
        })
    }

    /// Keep what the next request needs once `down`'s is over: its heads
    /// and buffers are dropped, the read buffer too unless it holds
    /// pipelined bytes.
    #[inline]
    pub fn give_back(&mut self, down: Downstream) {
        if let VisitorIo::Http1(mut io) = down.io {
            io.release();
            self.io = Some(io);
        }
        self.client = down.client;
        self.arrival = down.arrival;
        self.shutdown = Some(down.shutdown);
    }
}

impl Downstream {
    /// The port the visitor connected to: a PROXY header's destination,
    /// else ours.
    pub fn visitor_port(&self) -> Option<u16> {
        match self.client.as_ref().and_then(|c| c.proxied.as_deref()) {
            Some((_, destination)) => Some(destination.port()),
            None => self.arrival.local_port,
        }
    }

    /// Whether the server is stopping.
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Read the next request head into `head`. `Ok(false)`: the visitor closed
/// the connection or went quiet (also in the middle of a head, which is
/// then not answered, as nginx does). `wait`: how long the first byte may
/// take; `read`: how long the whole head may take from its first byte (as
/// nginx's `client_header_timeout`: a head sent a byte at a time cannot
/// hold the connection longer). Each byte is looked at once to find where
/// the head ends; it is parsed once, when whole.
pub async fn read_head(
    io: &mut Io<Stream>,
    head: &mut RequestHead,
    limits: &Limits,
    wait: Duration,
    read: Duration,
) -> std::result::Result<bool, HeadError> {
    let mut deadline = None;
    let mut end = HeadEnd::default();
    loop {
        // Empty lines before a request line are skipped (RFC 9112 2.2).
        let skip = empty_lines(io.unread());
        if skip > 0 {
            io.consume(skip);
            end.reset();
        }
        let timeout = if io.unread().is_empty() {
            wait
        } else {
            if let Some(len) = end.find(io.unread()) {
                if len > limits.max_head {
                    return Err(HeadError::TooLarge);
                }
                return match head.parse(&io.unread()[..len], limits)? {
                    Some(n) => {
                        io.consume(n);
                        Ok(true)
                    }
                    None => Err(HeadError::Malformed),
                };
            }
            if io.unread().len() > limits.max_head {
                return Err(HeadError::TooLarge);
            }
            let deadline = *deadline.get_or_insert_with(|| clock::now() + read);
            deadline.saturating_duration_since(clock::now())
        };
        match io.fill(timeout).await {
            Ok(0) | Err(_) => return Ok(false),
            Ok(_) => {}
        }
    }
}

/// How the visitor's response head is shaped.
pub struct Shape {
    /// The visitor's connection stays open after the response.
    pub keep: bool,
    /// The visitor speaks HTTP/1.0.
    pub http10: bool,
    /// A `101 Switching Protocols` to a WebSocket handshake.
    pub upgrade: bool,
    /// The framing header the visitor gets.
    pub framing: Outgoing,
}

/// Append the node's response head as the visitor gets it: without the
/// hop-by-hop headers (RFC 9110 7.6.1) and the node's framing lines, with
/// the proxy's own framing header, the connection's fate said, the
/// session cookies added, and `Strict-Transport-Security` when the route
/// asks for it (over HTTPS) and the node did not send one.
pub fn write_response_head<'a>(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    shape: &Shape,
    cookies: impl Iterator<Item = &'a String>,
    hsts: Option<&str>,
) {
    let fields = &resp.fields;
    // One allocation for the whole head (`out` is empty between requests).
    out.reserve(fields.byte_len() + 4 * fields.len() + super::upstream::HEAD_ROOM);
    put_status_line(out, resp.status, resp.reason());
    let named = ConnectionNamed::of(fields);
    fields.put_lines(out, |known, name| {
        visitor_gets(known, name, &named, shape.upgrade)
    });
    shape.framing.put(out);
    if shape.upgrade {
        put_header(out, b"Connection", b"upgrade");
    } else if !shape.keep {
        put_header(out, b"Connection", b"close");
    } else if shape.http10 {
        put_header(out, b"Connection", b"keep-alive");
    }
    for cookie in cookies {
        put_header(out, b"Set-Cookie", cookie.as_bytes());
    }
    if let Some(value) = hsts {
        if fields.get("strict-transport-security").is_none() {
            put_header(out, b"Strict-Transport-Security", value.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether the visitor gets this header line of the node's response: not
/// the hop-by-hop ones (RFC 9110 7.6.1), those its `Connection` names, nor
/// the node's framing lines (the proxy writes its own); `Upgrade` only on a
/// WebSocket's `101`. `known`: what `name` is; `named`: what the head's
/// `Connection` lines name.
pub fn visitor_gets(known: Known, name: &[u8], named: &ConnectionNamed<'_>, upgrade: bool) -> bool {
    let dropped = match known {
        Known::Connection
        | Known::KeepAlive
        | Known::ProxyConnection
        | Known::Trailer
        | Known::ContentLength
        | Known::TransferEncoding => true,
        Known::Upgrade => !upgrade,
        _ if known.never_named() => false,
        _ => named.contains(name),
    };
    !dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The visitor's head for this node response head, parsed back.
    fn shaped(node: &str, shape: Shape, cookies: &[&str]) -> ResponseHead {
        let mut resp = ResponseHead::default();
        resp.parse(node.as_bytes(), &Limits::default())
            .unwrap()
            .expect("complete");
        let cookies: Vec<String> = cookies.iter().map(|c| (*c).to_owned()).collect();
        let mut out = Vec::new();
        write_response_head(&mut out, &resp, &shape, cookies.iter(), None);
        let mut back = ResponseHead::default();
        let n = back
            .parse(&out, &Limits::default())
            .unwrap()
            .expect("a complete head");
        assert_eq!(n, out.len());
        back
    }

    const KEEP: Shape = Shape {
        keep: true,
        http10: false,
        upgrade: false,
        framing: Outgoing::None,
    };

    #[test]
    fn hop_by_hop_headers_stay_with_the_node() {
        let r = shaped(
            "HTTP/1.1 200 Fine\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
             X-Hop: 1\r\nUpgrade: h2c\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n",
            KEEP,
            &["a=1"],
        );
        assert_eq!((r.status, r.reason()), (200, &b"Fine"[..]));
        for gone in ["connection", "keep-alive", "x-hop", "upgrade"] {
            assert!(r.fields.get(gone).is_none(), "{gone} went to the visitor");
        }
        assert_eq!(r.fields.get_str("x-kept"), Some("2"));
        // The node's framing line is not copied: the proxy writes its own.
        assert!(r.fields.get("content-length").is_none());
        assert_eq!(r.fields.get_str("set-cookie"), Some("a=1"));
    }

    #[test]
    fn the_connection_fate_is_said() {
        let node = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let close = shaped(
            node,
            Shape {
                keep: false,
                ..KEEP
            },
            &[],
        );
        assert_eq!(close.fields.get_str("connection"), Some("close"));
        let http10 = shaped(
            node,
            Shape {
                http10: true,
                ..KEEP
            },
            &[],
        );
        assert_eq!(http10.fields.get_str("connection"), Some("keep-alive"));
        assert!(shaped(node, KEEP, &[]).fields.get("connection").is_none());
        let upgrade = shaped(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            Shape {
                keep: false,
                upgrade: true,
                ..KEEP
            },
            &[],
        );
        assert_eq!(upgrade.fields.get_str("connection"), Some("upgrade"));
        assert_eq!(upgrade.fields.get_str("upgrade"), Some("websocket"));
    }

    #[test]
    fn the_visitor_gets_the_framing_the_proxy_writes_and_no_other() {
        let node = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\
                    Content-Length: 5\r\nTrailer: X-Sum\r\n\r\n";
        for (framing, te, cl) in [
            (Outgoing::Chunked, Some("chunked"), None),
            (Outgoing::Length(12), None, Some("12")),
            (Outgoing::None, None, None),
        ] {
            let r = shaped(node, Shape { framing, ..KEEP }, &[]);
            let tes: Vec<&[u8]> = r.fields.get_all("transfer-encoding").collect();
            let cls: Vec<&[u8]> = r.fields.get_all("content-length").collect();
            assert_eq!(tes, te.map(str::as_bytes).into_iter().collect::<Vec<_>>());
            assert_eq!(cls, cl.map(str::as_bytes).into_iter().collect::<Vec<_>>());
            assert!(r.fields.get("trailer").is_none());
        }
    }
}
