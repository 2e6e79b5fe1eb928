//! TLS for visitors: HTTPS listeners terminated by the proxy.
//!
//! - [`certificate`]: a chain and key file read, checked and parsed (when
//!   the config is loaded: every fault is a config error);
//! - [`resolver`]: the certificate of a handshake chosen by SNI;
//! - [`Terminator`] (here): one per `[[tls]]` listener, the rustls server
//!   settings behind an atomic pointer that a reload replaces, and the
//!   handshake of each new connection, bounded in time;
//! - [`expiry`]: warnings before certificates expire.
//!
//! The engine is rustls (with the `ring` provider), through pingora's own
//! rustls stream and acceptor (`pingora::protocols::tls`), so that what
//! follows the handshake is a pingora `Stream` like any other. webcluster
//! runs the handshake itself, on the plain connection pingora accepted,
//! rather than through pingora's TLS listener: that one hard-codes TLS 1.2
//! and 1.3 with no minimum to set, has no session tickets, panics on a bad
//! certificate and cannot swap its settings on reload. docs/tls.md says
//! why rustls.

pub mod certificate;
pub mod expiry;
pub mod resolver;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use rustls::server::{
    NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::ServerConfig;

pub use certificate::Certificate;
pub use resolver::SniResolver;

use crate::config::{Config, TlsListener, TlsVersion};

/// The ALPN protocols a TLS listener offers, in order of preference.
///
/// The one place ALPN is decided: `h2` first when the listener's `http2` is
/// on (`Proxy::process_new` hands those connections to `serve_h2`), then
/// `http/1.1`.
pub fn alpn_protocols(listener: &TlsListener) -> Vec<Vec<u8>> {
    let mut protocols = vec![b"http/1.1".to_vec()];
    if listener.http2 {
        protocols.insert(0, b"h2".to_vec());
    }
    protocols
}

/// What the handshake of a visitor's connection settled.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsInfo {
    /// The name the visitor asked for (SNI), lower case, if it sent one.
    pub sni: Option<String>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The protocol ALPN chose, if the visitor offered any.
    pub alpn: Option<ALPN>,
}

/// Why a visitor's handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not done in {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(String),
}

/// The TLS side of one `[[tls]]` listener.
pub struct Terminator {
    config: ArcSwap<ServerConfig>,
    /// Kept across reloads: a session resumed after a reload is still one
    /// this process issued.
    tickets: Arc<dyn ProducesTickets>,
    sessions: Mutex<(usize, Arc<dyn StoresServerSessions>)>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator").finish_non_exhaustive()
    }
}

fn session_store(size: usize) -> Arc<dyn StoresServerSessions> {
    if size == 0 {
        Arc::new(NoServerSessionStorage {})
    } else {
        ServerSessionMemoryCache::new(size)
    }
}

impl Terminator {
    /// The settings of `listener`, ready for handshakes.
    pub fn new(listener: &TlsListener) -> Result<Terminator, rustls::Error> {
        let tickets = rustls::crypto::ring::Ticketer::new()?;
        let sessions = session_store(listener.session_cache);
        let config = server_config(listener, &tickets, &sessions)?;
        Ok(Terminator {
            config: ArcSwap::from_pointee(config),
            tickets,
            sessions: Mutex::new((listener.session_cache, sessions)),
        })
    }

    /// New settings (a reload): new handshakes use them, connections
    /// already open keep what they negotiated.
    pub fn update(&self, listener: &TlsListener) -> Result<(), rustls::Error> {
        let sessions = {
            let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if s.0 != listener.session_cache {
                *s = (
                    listener.session_cache,
                    session_store(listener.session_cache),
                );
            }
            Arc::clone(&s.1)
        };
        let config = server_config(listener, &self.tickets, &sessions)?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// The handshake of a connection pingora accepted on this listener,
    /// bounded by `timeout`; the stream then reads and writes plain text.
    pub async fn accept(
        &self,
        stream: L4Stream,
        timeout: Duration,
    ) -> Result<(Stream, TlsInfo), HandshakeError> {
        let acceptor = Acceptor::from_server_config(self.config.load_full());
        let tls = match tokio::time::timeout(timeout, acceptor.tls_handshake(stream)).await {
            Err(_) => return Err(HandshakeError::Timeout(timeout)),
            Ok(Err(e)) => return Err(HandshakeError::Failed(e.to_string())),
            Ok(Ok(tls)) => tls,
        };
        use pingora::protocols::Ssl;
        let info = TlsInfo {
            sni: tls
                .get_ssl()
                .and_then(|s| s.server_name())
                .map(str::to_ascii_lowercase),
            version: match tls.get_ssl().and_then(|s| s.version()) {
                // rustls's names, as pingora passes them on.
                Some("TLSv1_3") => "TLSv1.3",
                Some("TLSv1_2") => "TLSv1.2",
                Some(other) => other,
                None => "-",
            },
            alpn: tls.selected_alpn_proto(),
        };
        Ok((Box::new(tls), info))
    }
}

/// rustls's `ring` provider, the one pingora's rustls support is built on.
/// rustls marks it deprecated because it has no post-quantum key exchange
/// (X25519MLKEM768 needs the `aws-lc-rs` provider: docs/tls.md); its
/// classical suites and groups are the ones the nginx and OpenSSL 3.0 of
/// Debian 12 offer.
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The rustls settings of a listener: protocol versions from its
/// `min_version` (never below TLS 1.2), rustls's cipher suites (every one
/// of them AEAD with forward secrecy, the Mozilla "intermediate" list
/// without its DHE and CBC suites: docs/tls.md), the SNI resolver over its
/// certificates, session resumption, no 0-RTT data (replayable).
fn server_config(
    listener: &TlsListener,
    tickets: &Arc<dyn ProducesTickets>,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<ServerConfig, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match listener.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let resolver = SniResolver::new(&listener.certificates).ok_or(rustls::Error::General(
        "a TLS listener has no certificate".into(),
    ))?;
    let provider = Arc::new(provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn_protocols(listener);
    config.session_storage = Arc::clone(sessions);
    if listener.session_tickets {
        config.ticketer = Arc::clone(tickets);
    }
    config.max_early_data_size = 0;
    Ok(config)
}

/// Every TLS listener of the process, and which accepted address belongs
/// to which (shared by the proxy, which runs handshakes, and the reloader,
/// which swaps their settings).
#[derive(Debug, Default)]
pub struct Terminators {
    /// One per `[[tls]]`, in config order.
    listeners: Vec<Terminator>,
    /// Each listening address and its listener's index.
    endpoints: Vec<(std::net::SocketAddr, usize)>,
}

impl Terminators {
    /// The TLS listeners of `config`.
    pub fn new(config: &Config) -> Result<Terminators, rustls::Error> {
        let mut t = Terminators::default();
        for (i, listener) in config.tls.iter().enumerate() {
            t.listeners.push(Terminator::new(listener)?);
            t.endpoints.extend(listener.listen.iter().map(|a| (*a, i)));
        }
        Ok(t)
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Swap in the settings and certificates of a reloaded config (whose
    /// TLS listeners are the running ones: `reload` keeps their addresses).
    pub fn update(&self, config: &Config) {
        for (i, (t, listener)) in self.listeners.iter().zip(&config.tls).enumerate() {
            if let Err(e) = t.update(listener) {
                tracing::error!(
                    listener = i + 1,
                    "reload: the TLS settings cannot be built, the listener keeps its old ones: {e}"
                );
            }
        }
    }

    /// The listener a connection accepted on local address `local` came
    /// in by: the one bound to that address, else one bound to the
    /// unspecified address (`0.0.0.0`, `[::]`) on its port.
    pub fn for_local(&self, local: std::net::SocketAddr) -> Option<&Terminator> {
        let exact = self.endpoints.iter().find(|(a, _)| *a == local);
        let any = || {
            self.endpoints
                .iter()
                .find(|(a, _)| a.port() == local.port() && a.ip().is_unspecified())
        };
        let (_, i) = exact.or_else(any)?;
        self.listeners.get(*i)
    }
}
