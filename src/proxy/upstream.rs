//! The node side of a request: the connection (pooled or new) and the
//! request head as the node gets it, written as bytes.
//!
//! The request a node gets is the visitor's, minus the hop-by-hop headers
//! (RFC 9110 7.6.1: `Connection` and the headers it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`), minus `Expect` (the
//! proxy answers `100 Continue` itself, as nginx does), plus the
//! `X-Forwarded-*` headers, `Connection: close` when the connection is not
//! to be kept, and `Connection: Upgrade` with the visitor's `Upgrade` for a
//! WebSocket handshake. The other header lines go on as the visitor sent
//! them, in order and with their own case.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use pingora::{Error, ErrorType, OrErr, Result};
use tokio::net::TcpStream;

use super::forwarded;
use super::http1::{
    io_error, put_header, ConnectionNamed, Io, Known, Limits, Outgoing, RequestHead, ResponseHead,
};
use super::pool::Pool;

/// A connection to a node, and whether it came from the pool.
pub struct Connection {
    pub stream: TcpStream,
    pub reused: bool,
}

/// A pooled connection to `addr` if one is idle (and a pool is given),
/// else a new one, after `before_new` (which may make room for it).
pub async fn connect(
    pool: Option<&Pool>,
    addr: SocketAddr,
    timeout: Duration,
    max_idle: Duration,
    before_new: impl FnOnce() -> Option<TcpStream>,
) -> Result<Connection> {
    // This thread's idle connection, else one `before_new` gives instead
    // of a new connection.
    if let Some(stream) = pool
        .and_then(|p| p.take(addr, max_idle))
        .or_else(before_new)
    {
        return Ok(Connection {
            stream,
            reused: true,
        });
    }
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Error::e_explain(
                ErrorType::ConnectTimedout,
                format!("connecting to {addr}: no answer in {timeout:?}"),
            )
        }
        Ok(Err(e)) => {
            let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ErrorType::ConnectRefused
            } else {
                ErrorType::ConnectError
            };
            return Err(Error::because(kind, format!("connecting to {addr}"), e));
        }
        Ok(Ok(tcp)) => tcp,
    };
    tcp.set_nodelay(true)
        .or_err(ErrorType::ConnectError, "setting TCP_NODELAY")?;
    Ok(Connection {
        stream: tcp,
        reused: false,
    })
}

/// Acknowledge the node's next segment at once instead of up to 40 ms
/// later; called before each read of a response body that did not come
/// whole with its head.
///
/// A connection that carries a request then a response is "interactive"
/// to Linux, which then delays its ACKs to piggyback them on the next
/// request. A node that sends its last, partial segment only once the ones
/// before are acknowledged (Nagle's rule; nginx with `sendfile` and
/// `tcp_nopush`, as in Debian's default `nginx.conf`) then waits for that
/// delayed ACK: a 64 KiB response took 40 ms instead of 1 ms about once in a
/// hundred in `benches/` (p99 15–25 ms, 7–10 ms with this). `TCP_QUICKACK`
/// is not permanent, hence once per read; a failure only costs the delay,
/// so it is ignored.
pub fn ack_promptly(tcp: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = tcp;
}

/// Read a node's response head into `resp`.
pub async fn read_response_head(
    io: &mut Io<TcpStream>,
    resp: &mut ResponseHead,
    limits: &Limits,
    timeout: Duration,
) -> Result<()> {
    loop {
        if !io.unread().is_empty() {
            let parsed = resp.parse(io.unread(), limits).map_err(|e| {
                Error::because(ErrorType::InvalidHTTPHeader, "the node's response", e)
            })?;
            if let Some(n) = parsed {
                io.consume(n);
                return Ok(());
            }
        }
        let read = io
            .fill(timeout)
            .await
            .map_err(|e| io_error(e, false, "reading the node's response"))?;
        if read == 0 {
            return Error::e_explain(
                ErrorType::ConnectionClosed,
                "the node closed the connection before its response",
            );
        }
    }
}

/// The visitor's address, and the same as a header value (computed once
/// per connection: it is what most requests' forwarded headers are).
#[derive(Clone)]
pub struct Visitor {
    pub ip: IpAddr,
    /// `ip` as text (a `Box<str>`: every idle connection holds this).
    pub value: Box<str>,
    /// The visitor's address and the one it connected to, as a PROXY
    /// protocol header from a trusted source gave them (boxed: most
    /// connections have none, and every idle connection holds this).
    pub proxied: Option<Box<(SocketAddr, SocketAddr)>>,
}

impl Visitor {
    pub fn new(ip: IpAddr) -> Visitor {
        Visitor {
            ip,
            value: ip.to_string().into_boxed_str(),
            proxied: None,
        }
    }

    /// A visitor whose addresses a PROXY protocol header gave.
    pub fn proxied(source: SocketAddr, destination: SocketAddr) -> Visitor {
        Visitor {
            proxied: Some(Box::new((source, destination))),
            ..Visitor::new(source.ip())
        }
    }
}

/// How the node's request is to be framed and forwarded.
pub struct Forwarding<'a> {
    /// Proxies whose X-Forwarded-For is kept and appended to.
    pub trusted: &'a [IpNet],
    pub client: Option<&'a Visitor>,
    /// How the visitor came: `http` or `https` (`X-Forwarded-Proto`).
    pub scheme: &'static str,
    /// The port the visitor connected to (`X-Forwarded-Port`).
    pub port: Option<u16>,
    /// Ask the node to close the connection after the response.
    pub close: bool,
    /// The framing header the node gets.
    pub framing: Outgoing,
}

/// Append the request head the node gets (see the module doc) to `out`.
pub fn write_request_head(out: &mut Vec<u8>, visitor: &RequestHead, f: &Forwarding<'_>) {
    let fields = &visitor.fields;
    // One allocation for the whole head (`out` is empty between requests):
    // the visitor's lines, their separators, and the lines the proxy adds.
    out.reserve(fields.byte_len() + 4 * fields.len() + HEAD_ROOM);
    out.extend_from_slice(visitor.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(visitor.origin_target().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let websocket = visitor.is_websocket_upgrade();
    let named = ConnectionNamed::of(fields);
    // An absolute-form target names the host: it replaces `Host`.
    let authority = visitor.target_authority();
    if let Some(authority) = authority {
        put_header(out, b"Host", authority.as_bytes());
    }
    fields.put_lines(out, |known, name| {
        let dropped = match known {
            // The hop-by-hop headers (RFC 9110 7.6.1) and `Expect`
            // (answered by the proxy); the framing, which the proxy writes.
            Known::Connection
            | Known::KeepAlive
            | Known::ProxyConnection
            | Known::Te
            | Known::Trailer
            | Known::Upgrade
            | Known::Expect
            | Known::ContentLength
            | Known::TransferEncoding => true,
            Known::Host => authority.is_some(),
            // The headers the proxy sets itself from the visitor's address.
            Known::XForwardedFor
            | Known::XRealIp
            | Known::XForwardedProto
            | Known::XForwardedPort => f.client.is_some(),
            // Never removed by `Connection`.
            Known::XForwardedHost | Known::Forwarded => false,
            Known::Referer | Known::UserAgent | Known::Other => named.contains(name),
        };
        !dropped
    });
    f.framing.put(out);
    if websocket {
        put_header(out, b"Connection", b"Upgrade");
        if let Some(u) = fields.first(Known::Upgrade) {
            put_header(out, b"Upgrade", u);
        }
    } else if f.close {
        put_header(out, b"Connection", b"close");
    }
    if let Some(client) = f.client {
        let mut digits = itoa::Buffer::new();
        let own_port = f.port.map(|p| digits.format(p));
        if !f.trusted.iter().any(|n| n.contains(&client.ip)) {
            // Anything the visitor claims is replaced by its own address.
            let ip = client.value.as_bytes();
            put_header(out, b"X-Forwarded-For", ip);
            put_header(out, b"X-Real-IP", ip);
            put_header(out, b"X-Forwarded-Proto", f.scheme.as_bytes());
            if let Some(port) = &own_port {
                put_header(out, b"X-Forwarded-Port", port.as_bytes());
            }
        } else {
            let xff: Vec<&str> = fields.get_all_str("x-forwarded-for").collect();
            let proto = fields.get_str("x-forwarded-proto");
            let fw = forwarded::forwarded(client.ip, &xff, proto, f.trusted, f.scheme);
            put_header(out, b"X-Forwarded-For", fw.x_forwarded_for.as_bytes());
            put_header(out, b"X-Real-IP", fw.x_real_ip.as_bytes());
            put_header(out, b"X-Forwarded-Proto", fw.x_forwarded_proto.as_bytes());
            // A trusted proxy's own port goes on with its scheme.
            let port = fields
                .get_str("x-forwarded-port")
                .map(str::trim)
                .filter(|p| p.parse::<u16>().is_ok())
                .or(own_port);
            if let Some(port) = port {
                put_header(out, b"X-Forwarded-Port", port.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Room for what the proxy writes into a head besides the lines it copies
/// (request or status line, framing, `Connection`, the forwarded headers).
pub const HEAD_ROOM: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> RequestHead {
        let mut head = RequestHead::default();
        let n = head
            .parse(raw, &Limits::default())
            .unwrap()
            .expect("a complete head");
        assert_eq!(n, raw.len());
        head
    }

    fn visitor(headers: &[(&str, &str)]) -> RequestHead {
        let lines: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let host = if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            ""
        } else {
            "Host: a\r\n"
        };
        parse(format!("GET /x HTTP/1.1\r\n{host}{lines}\r\n").as_bytes())
    }

    /// The head the node gets, parsed back.
    fn for_node(visitor: &RequestHead, f: &Forwarding<'_>) -> RequestHead {
        let mut out = Vec::new();
        write_request_head(&mut out, visitor, f);
        parse(&out)
    }

    fn node_request(headers: &[(&str, &str)], close: bool) -> RequestHead {
        let client = Visitor::new("192.0.2.7".parse().unwrap());
        let f = Forwarding {
            trusted: &[],
            client: Some(&client),
            scheme: "http",
            port: None,
            close,
            framing: Outgoing::None,
        };
        for_node(&visitor(headers), &f)
    }

    fn header<'a>(r: &'a RequestHead, name: &str) -> &'a str {
        r.fields
            .get_str(name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_dropped() {
        let r = node_request(
            &[
                ("Host", "example.org"),
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("TE", "trailers"),
                ("Expect", "100-continue"),
                ("Accept", "*/*"),
            ],
            false,
        );
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "te",
            "expect",
        ] {
            assert!(r.fields.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(header(&r, "host"), "example.org");
        assert_eq!(header(&r, "accept"), "*/*");
        assert_forwarded(&r, "192.0.2.7", "192.0.2.7", "http");
    }

    fn assert_forwarded(r: &RequestHead, xff: &str, real_ip: &str, proto: &str) {
        assert_eq!(header(r, "x-forwarded-for"), xff);
        assert_eq!(header(r, "x-real-ip"), real_ip);
        assert_eq!(header(r, "x-forwarded-proto"), proto);
    }

    #[test]
    fn a_trusted_proxy_keeps_its_chain_and_an_untrusted_client_does_not() {
        let headers = [
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
        ];
        let trusted: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        let client = Visitor::new("192.0.2.7".parse().unwrap());
        let f = Forwarding {
            trusted: &trusted,
            client: Some(&client),
            scheme: "http",
            port: None,
            close: false,
            framing: Outgoing::None,
        };
        let r = for_node(&visitor(&headers), &f);
        assert_forwarded(&r, "203.0.113.9, 192.0.2.7", "203.0.113.9", "https");
        // Not trusted: what the visitor claims is replaced.
        let r = node_request(&headers, false);
        assert_forwarded(&r, "192.0.2.7", "192.0.2.7", "http");
    }

    #[test]
    fn tls_visitors_are_said_https_with_their_port() {
        let client = Visitor::new("198.51.100.4".parse().unwrap());
        let headers = [("X-Forwarded-Proto", "http"), ("X-Forwarded-Port", "1")];
        let f = Forwarding {
            trusted: &[],
            client: Some(&client),
            scheme: "https",
            port: Some(8443),
            close: false,
            framing: Outgoing::None,
        };
        let r = for_node(&visitor(&headers), &f);
        assert_forwarded(&r, "198.51.100.4", "198.51.100.4", "https");
        assert_eq!(
            r.fields.get_all_str("x-forwarded-port").collect::<Vec<_>>(),
            ["8443"]
        );
        // A trusted proxy in front says its own scheme and port.
        let trusted: Vec<IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
        let f = Forwarding {
            trusted: &trusted,
            scheme: "http",
            port: Some(80),
            ..f
        };
        let r = for_node(
            &visitor(&[("X-Forwarded-Proto", "https"), ("X-Forwarded-Port", "443")]),
            &f,
        );
        assert_eq!(header(&r, "x-forwarded-proto"), "https");
        assert_eq!(header(&r, "x-forwarded-port"), "443");
    }

    #[test]
    fn close_is_asked_when_the_connection_is_not_kept() {
        let r = node_request(&[("Host", "a")], true);
        assert_eq!(header(&r, "connection"), "close");
        let r = node_request(&[("Host", "a"), ("Connection", "close")], false);
        assert!(r.fields.get("connection").is_none());
    }

    /// The head the node gets for `headers`, with `framing` written.
    fn node_request_framed(headers: &[(&str, &str)], framing: Outgoing) -> RequestHead {
        let client = Visitor::new("192.0.2.7".parse().unwrap());
        let f = Forwarding {
            trusted: &[],
            client: Some(&client),
            scheme: "http",
            port: None,
            close: false,
            framing,
        };
        for_node(&visitor(headers), &f)
    }

    #[test]
    fn the_node_gets_one_framing_header_the_proxy_wrote() {
        let headers = [("Transfer-Encoding", "chunked"), ("X-Between", "1")];
        for (framing, te, cl) in [
            (Outgoing::Chunked, Some("chunked"), None),
            (Outgoing::Length(7), None, Some("7")),
            (Outgoing::None, None, None),
        ] {
            let r = node_request_framed(&headers, framing);
            let tes: Vec<&str> = r.fields.get_all_str("transfer-encoding").collect();
            let cls: Vec<&str> = r.fields.get_all_str("content-length").collect();
            assert_eq!(tes, te.into_iter().collect::<Vec<_>>(), "{framing:?}");
            assert_eq!(cls, cl.into_iter().collect::<Vec<_>>(), "{framing:?}");
        }
    }

    #[test]
    fn connection_cannot_remove_host_framing_or_forwarded_headers() {
        let r = node_request_framed(
            &[
                ("Host", "site.example"),
                (
                    "Connection",
                    "Host, Transfer-Encoding, Content-Length, X-Forwarded-For, X-Real-IP, X-Other",
                ),
                ("Content-Length", "3"),
                ("X-Other", "gone"),
            ],
            Outgoing::Length(3),
        );
        assert_eq!(header(&r, "host"), "site.example");
        assert_eq!(header(&r, "content-length"), "3");
        assert_eq!(header(&r, "x-forwarded-for"), "192.0.2.7");
        assert_eq!(header(&r, "x-real-ip"), "192.0.2.7");
        assert!(r.fields.get("x-other").is_none());
    }

    #[test]
    fn an_absolute_target_goes_in_origin_form_with_its_host() {
        let mut head = RequestHead::default();
        let raw = b"GET http://other.example/abs?q HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        head.parse(raw, &Limits::default()).unwrap().unwrap();
        let client = Visitor::new("192.0.2.7".parse().unwrap());
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &head,
            &Forwarding {
                trusted: &[],
                client: Some(&client),
                scheme: "http",
                port: None,
                close: false,
                framing: Outgoing::None,
            },
        );
        let r = parse(&out);
        assert_eq!(r.target(), "/abs?q");
        let hosts: Vec<&str> = r.fields.get_all_str("host").collect();
        assert_eq!(hosts, ["other.example"]);
        assert_eq!(header(&r, "accept"), "*/*");
    }

    #[test]
    fn websocket_handshake_keeps_its_upgrade() {
        let hs = [
            ("Host", "a"),
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert!(visitor(&hs).is_websocket_upgrade());
        let r = node_request(&hs, true);
        assert_eq!(header(&r, "connection"), "Upgrade");
        assert_eq!(header(&r, "upgrade"), "websocket");
        assert_eq!(header(&r, "sec-websocket-key"), "dGhlIHNhbXBsZSBub25jZQ==");
        // Any other upgrade (h2c, TLS) is not passed on.
        let other = [("Connection", "Upgrade"), ("Upgrade", "h2c")];
        assert!(!visitor(&other).is_websocket_upgrade());
        let r = node_request(&other, false);
        assert!(r.fields.get("upgrade").is_none());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn ack_promptly_switches_the_socket_to_quick_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let sock = socket2::SockRef::from(&tcp);
        sock.set_tcp_quickack(false).unwrap();
        assert!(!sock.tcp_quickack().unwrap());
        ack_promptly(&tcp);
        assert!(sock.tcp_quickack().unwrap());
    }
}
