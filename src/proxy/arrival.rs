//! How a visitor's connection arrived: by which port of ours, over TLS or
//! plain TCP (and then what the handshake settled: SNI name, version,
//! ALPN), and the addresses a PROXY protocol header gave when it was read
//! before the handshake. Decided once per connection, before the first
//! request; read where the `X-Forwarded-*` headers are written, by the
//! route's HTTPS redirect and HSTS, and by the access log.

use std::net::SocketAddr;

use pingora::protocols::ALPN;

use crate::tls::TlsInfo;

/// One visitor connection's arrival.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arrival {
    /// The port of ours the visitor connected to (a PROXY header's
    /// destination port replaces it: see `Downstream::visitor_port`).
    pub local_port: Option<u16>,
    /// Set when the connection is TLS (boxed: plain connections, most of
    /// an idle crowd, hold no room for it).
    pub tls: Option<Box<TlsInfo>>,
    /// A PROXY protocol header was read before the TLS handshake (from a
    /// `proxy_protocol_from` source), with the addresses it gave if any:
    /// the request loop does not look for one again. Boxed: most
    /// connections have none, and every idle connection holds this.
    pub proxy_header: Option<Box<Option<(SocketAddr, SocketAddr)>>>,
}

impl Arrival {
    /// A plain TCP connection accepted on `local`.
    pub fn plain(local: Option<SocketAddr>) -> Arrival {
        Arrival {
            local_port: local.map(|a| a.port()),
            ..Arrival::default()
        }
    }

    /// Whether the visitor came over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The scheme the visitor used, as `X-Forwarded-Proto` says it.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// The protocol ALPN chose, if any.
    pub fn alpn(&self) -> Option<&ALPN> {
        self.tls.as_ref()?.alpn.as_ref()
    }
}
