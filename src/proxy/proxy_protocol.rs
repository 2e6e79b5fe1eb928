//! The PROXY protocol (HAProxy's specification, versions 1 and 2): the
//! header an L4 balancer or another proxy in front sends first on a
//! connection to say whose it is, read from the sources the config trusts
//! (`[server] proxy_protocol_from`), and the header written to nodes that
//! ask for it (a group's `send_proxy_protocol`; Apache's
//! `RemoteIPProxyProtocol On`).
//!
//! Parsing and building are the `ppp` crate's (both versions, with its
//! incomplete-input handling); this module bounds what is read and maps the
//! result to addresses.

use std::net::SocketAddr;

use ppp::v2::{Builder, Command, Protocol, Version};
use ppp::{v1, v2, PartialResult};

pub use crate::config::ProxyVersion;

/// The longest PROXY header accepted (a version 1 header is at most 107
/// bytes; version 2 may carry TLVs, which are read and ignored).
pub const MAX_HEADER: usize = 4096;

/// A header that cannot be read: the connection is closed, as HAProxy does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHeader(pub String);

impl std::fmt::Display for BadHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad PROXY protocol header: {}", self.0)
    }
}

impl std::error::Error for BadHeader {}

/// A complete header at the start of `buf`: its length, and the visitor's
/// and the original destination's addresses when it gives them (not for a
/// version 1 `UNKNOWN`, a version 2 `LOCAL` health check of the balancer, or
/// Unix sockets: the connection's own addresses then stand).
/// `Ok(None)`: not complete yet.
pub type Parsed = Option<(usize, Option<(SocketAddr, SocketAddr)>)>;

/// (source, destination) of any of ppp's address structs, whose fields are
/// named alike in both versions and both families.
macro_rules! pair {
    ($a:expr) => {
        (
            SocketAddr::from(($a.source_address, $a.source_port)),
            SocketAddr::from(($a.destination_address, $a.destination_port)),
        )
    };
}

/// The longest version 1 header, with its CRLF (the specification's 107).
const MAX_V1: usize = 107;

/// The 12-byte signature that starts a version 2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Parse the PROXY header at the start of `buf` (see [`Parsed`]).
pub fn parse(buf: &[u8]) -> Result<Parsed, BadHeader> {
    let prefix_of = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if prefix_of(b"PROXY ") {
        // A version 1 line is read whole, up to its CRLF: parsed earlier, a
        // number cut by the end of a read looks like a bad one.
        let window = &buf[..buf.len().min(MAX_V1)];
        let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
            return if buf.len() >= MAX_V1 {
                Err(BadHeader(format!("no CRLF in the first {MAX_V1} bytes")))
            } else {
                Ok(None)
            };
        };
        return match v1::Header::try_from(&buf[..cr + 2]) {
            Ok(h) => Ok(Some((cr + 2, v1_addresses(h.addresses)))),
            Err(e) => Err(BadHeader(e.to_string())),
        };
    }
    if !prefix_of(V2_SIGNATURE) {
        return Err(BadHeader(
            "neither a version 1 nor a version 2 header".into(),
        ));
    }
    let result = v2::Header::try_from(buf);
    if result.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Err(BadHeader(format!("longer than {MAX_HEADER} bytes")))
        } else {
            Ok(None)
        };
    }
    let h = result.map_err(|e| BadHeader(e.to_string()))?;
    let len = h.len();
    if len > MAX_HEADER {
        return Err(BadHeader(format!("longer than {MAX_HEADER} bytes")));
    }
    let addrs = match (h.command, h.addresses) {
        (Command::Proxy, v2::Addresses::IPv4(a)) => Some(pair!(a)),
        (Command::Proxy, v2::Addresses::IPv6(a)) => Some(pair!(a)),
        _ => None,
    };
    Ok(Some((len, addrs)))
}

fn v1_addresses(a: v1::Addresses) -> Option<(SocketAddr, SocketAddr)> {
    match a {
        v1::Addresses::Tcp4(a) => Some(pair!(a)),
        v1::Addresses::Tcp6(a) => Some(pair!(a)),
        v1::Addresses::Unknown => None,
    }
}

/// The header a node gets for a connection from `source` to `destination`
/// (unknown addresses, or an IPv4 and an IPv6 address together, which no
/// header can say, give a version 1 `UNKNOWN` or a version 2 `LOCAL`: the
/// node then uses the connection's own addresses).
pub fn header(version: ProxyVersion, addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let (source, destination) = addrs.unwrap_or((unspecified, SocketAddr::from(([0; 16], 0))));
    let same_family = source.is_ipv4() == destination.is_ipv4();
    match version {
        ProxyVersion::V1 if same_family => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        ProxyVersion::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        ProxyVersion::V2 => {
            let built = if same_family {
                Builder::with_addresses(
                    Version::Two | Command::Proxy,
                    Protocol::Stream,
                    (source, destination),
                )
                .build()
            } else {
                Builder::with_addresses(
                    Version::Two | Command::Local,
                    Protocol::Unspecified,
                    v2::Addresses::Unspecified,
                )
                .build()
            };
            // Building into a Vec cannot fail; the LOCAL header is the
            // fixed 16 bytes of the specification.
            built.unwrap_or_else(|_| {
                let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
                local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
                local
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn both_versions_read_back_what_was_written() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            for (src, dst) in [
                ("192.0.2.7:51000", "198.51.100.1:443"),
                ("[2001:db8::7]:51000", "[2001:db8::1]:80"),
            ] {
                let mut bytes = header(version, Some((addr(src), addr(dst))));
                let len = bytes.len();
                bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
                assert_eq!(
                    parse(&bytes),
                    Ok(Some((len, Some((addr(src), addr(dst)))))),
                    "{version:?}"
                );
                // Any prefix is incomplete, never an error.
                for cut in 0..len {
                    assert_eq!(parse(&bytes[..cut]), Ok(None), "{version:?} cut at {cut}");
                }
            }
            let mixed = header(
                version,
                Some((addr("192.0.2.7:1"), addr("[2001:db8::1]:80"))),
            );
            assert_eq!(parse(&mixed), Ok(Some((mixed.len(), None))));
            let unknown = header(version, None);
            assert_eq!(parse(&unknown), Ok(Some((unknown.len(), None))));
        }
    }

    #[test]
    fn unknown_local_and_garbage() {
        assert_eq!(parse(b"PROXY UNKNOWN\r\nGET"), Ok(Some((15, None))));
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 x 80\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4\r\n").is_err());
        assert!(parse(&[b'P'; MAX_HEADER + 10]).is_err());
    }
}
