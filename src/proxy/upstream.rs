//! The node side of a request: the connection (pooled or new) and the
//! request header as the node gets it.
//!
//! The request a node gets is the visitor's, minus the hop-by-hop headers
//! (RFC 9110 7.6.1: `Connection` and the headers it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`), minus `Expect` (the
//! proxy answers `100 Continue` itself, as nginx does), plus the
//! `X-Forwarded-*` headers, `Connection: close` when the connection is not
//! to be kept, and `Connection: Upgrade` with the visitor's `Upgrade` for a
//! WebSocket handshake.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, OrErr, Result};

use super::forwarded;
use super::pool::Pool;
use ipnet::IpNet;

/// A connection to a node, and whether it came from the pool.
pub struct Connection {
    pub stream: Stream,
    pub reused: bool,
}

/// A pooled connection to `addr` if one is idle (and a pool is given),
/// else a new one.
pub async fn connect(
    pool: Option<&Pool>,
    addr: SocketAddr,
    timeout: Duration,
    max_idle: Duration,
) -> Result<Connection> {
    if let Some(stream) = pool.and_then(|p| p.take(addr, max_idle)) {
        return Ok(Connection {
            stream,
            reused: true,
        });
    }
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
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
        stream: Box::new(L4Stream::from(tcp)),
        reused: false,
    })
}

/// The visitor's address, and the same as a header value (computed once
/// per connection: it is what most requests' forwarded headers are).
pub struct Visitor {
    pub ip: IpAddr,
    pub value: HeaderValue,
}

impl Visitor {
    pub fn new(ip: IpAddr) -> Visitor {
        let value = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Visitor { ip, value }
    }
}

/// How the node's request is to be framed and forwarded.
pub struct Forwarding<'a> {
    /// Proxies whose X-Forwarded-For is kept and appended to.
    pub trusted: &'a [IpNet],
    pub client: Option<&'a Visitor>,
    /// Ask the node to close the connection after the response.
    pub close: bool,
}

/// The request header the node gets (see the module doc).
pub fn request_for_node(visitor: &RequestHeader, f: &Forwarding<'_>) -> Result<Box<RequestHeader>> {
    let mut req = visitor.clone();
    req.set_version(http::Version::HTTP_11);
    let websocket = is_websocket_upgrade(visitor);
    let upgrade = visitor.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut req);
    req.remove_header(&header::EXPECT);
    if websocket {
        req.insert_header(header::CONNECTION, "Upgrade")?;
        if let Some(u) = upgrade {
            req.insert_header(header::UPGRADE, u)?;
        }
    } else if f.close {
        req.insert_header(header::CONNECTION, "close")?;
    }
    if let Some(client) = f.client {
        if !f.trusted.iter().any(|n| n.contains(&client.ip)) {
            // Anything the visitor claims is replaced by its own address.
            req.insert_header(X_FORWARDED_FOR, client.value.clone())?;
            req.insert_header(X_REAL_IP, client.value.clone())?;
            req.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static("http"))?;
        } else {
            let xff: Vec<&str> = visitor
                .headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let proto = visitor
                .headers
                .get(&X_FORWARDED_PROTO)
                .and_then(|v| v.to_str().ok());
            let fw = forwarded::forwarded(client.ip, &xff, proto, f.trusted, "http");
            req.insert_header(X_FORWARDED_FOR, fw.x_forwarded_for)?;
            req.insert_header(X_REAL_IP, fw.x_real_ip)?;
            req.insert_header(X_FORWARDED_PROTO, fw.x_forwarded_proto)?;
        }
    }
    Ok(Box::new(req))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The hop-by-hop headers of RFC 9110 7.6.1 that are not framing
/// (`Transfer-Encoding` stays: it frames the body the node gets).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
];

fn strip_hop_by_hop(req: &mut RequestHeader) {
    if req.headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = req
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            // The body's framing is never dropped on a client's say-so.
            .filter(|n| *n != header::TRANSFER_ENCODING && *n != header::CONTENT_LENGTH)
            .collect();
        for n in named {
            req.remove_header(&n);
        }
    }
    for h in &HOP_BY_HOP {
        if req.headers.contains_key(h) {
            req.remove_header(h);
        }
    }
    if req.headers.contains_key(header::UPGRADE) {
        req.remove_header(&header::UPGRADE);
    }
}

/// `GET` with `Connection: upgrade` and `Upgrade: websocket` over HTTP/1.1.
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req.method == http::Method::GET
        && has_token(req, header::CONNECTION, "upgrade")
        && has_token(req, header::UPGRADE, "websocket")
}

/// Whether a comma-separated header of `req` lists `token` (any case).
pub(super) fn has_token(req: &RequestHeader, name: HeaderName, token: &str) -> bool {
    req.headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `Expect: 100-continue` on an HTTP/1.1 request.
pub fn expects_continue(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11 && has_token(req, header::EXPECT, "100-continue")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visitor(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn node_request(headers: &[(&str, &str)], close: bool) -> Box<RequestHeader> {
        let client = Visitor::new("192.0.2.7".parse().unwrap());
        let f = Forwarding {
            trusted: &[],
            client: Some(&client),
            close,
        };
        request_for_node(&visitor(headers), &f).unwrap()
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
            assert!(r.headers.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(r.headers["host"], "example.org");
        assert_eq!(r.headers["accept"], "*/*");
        assert_forwarded(&r, "192.0.2.7", "192.0.2.7", "http");
    }

    fn assert_forwarded(r: &RequestHeader, xff: &str, real_ip: &str, proto: &str) {
        assert_eq!(r.headers["x-forwarded-for"], xff);
        assert_eq!(r.headers["x-real-ip"], real_ip);
        assert_eq!(r.headers["x-forwarded-proto"], proto);
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
            close: false,
        };
        let r = request_for_node(&visitor(&headers), &f).unwrap();
        assert_forwarded(&r, "203.0.113.9, 192.0.2.7", "203.0.113.9", "https");
        // Not trusted: what the visitor claims is replaced.
        let r = node_request(&headers, false);
        assert_forwarded(&r, "192.0.2.7", "192.0.2.7", "http");
    }

    #[test]
    fn close_is_asked_when_the_connection_is_not_kept() {
        let r = node_request(&[("Host", "a")], true);
        assert_eq!(r.headers["connection"], "close");
        let r = node_request(&[("Host", "a"), ("Connection", "close")], false);
        assert!(r.headers.get("connection").is_none());
    }

    #[test]
    fn framing_headers_survive_a_connection_token_naming_them() {
        let r = node_request(
            &[
                ("Connection", "Transfer-Encoding, Content-Length"),
                ("Transfer-Encoding", "chunked"),
            ],
            false,
        );
        assert_eq!(r.headers["transfer-encoding"], "chunked");
    }

    #[test]
    fn websocket_handshake_keeps_its_upgrade() {
        let hs = [
            ("Host", "a"),
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert!(is_websocket_upgrade(&visitor(&hs)));
        let r = node_request(&hs, true);
        assert_eq!(r.headers["connection"], "Upgrade");
        assert_eq!(r.headers["upgrade"], "websocket");
        assert_eq!(r.headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        // Any other upgrade (h2c, TLS) is not passed on.
        let other = [("Connection", "Upgrade"), ("Upgrade", "h2c")];
        assert!(!is_websocket_upgrade(&visitor(&other)));
        let r = node_request(&other, false);
        assert!(r.headers.get("upgrade").is_none());
    }

    #[test]
    fn expect_continue_is_recognised() {
        assert!(expects_continue(&visitor(&[("Expect", "100-Continue")])));
        assert!(!expects_continue(&visitor(&[])));
    }
}
