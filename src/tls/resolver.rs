//! Choosing the certificate of a handshake by the name the visitor asked
//! for (SNI), as nginx and HAProxy do: a certificate naming it exactly,
//! else one naming it with a wildcard of one label (`*.example.com` covers
//! `www.example.com`, not `example.com` nor `a.b.example.com`), else the
//! listener's default, its first certificate (also for a visitor that sends
//! no name, or an IP address). Among certificates naming the same name the
//! first in the config wins.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certificate::Certificate;

/// The certificates of one TLS listener, by name.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the name with its first label removed (`example.com` for
    /// `*.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// `None` when `certificates` is empty (the config never allows it).
    pub fn new(certificates: &[Certificate]) -> Option<SniResolver> {
        let default = Arc::clone(&certificates.first()?.key);
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in certificates {
            for name in &c.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()),
                    None => exact.entry(name.clone()),
                }
                .or_insert_with(|| Arc::clone(&c.key));
            }
        }
        Some(SniResolver {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificate for the name a visitor sent, if any.
    pub fn choose(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k;
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return k;
            }
        }
        &self.default
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.choose(hello.server_name())))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::tls::certificate::tests::self_signed;

    fn cert(names: &[&str]) -> Certificate {
        let (chain, key) = self_signed(names, 0, 4_000_000_000);
        Certificate::from_pem(
            Path::new("c"),
            chain.as_bytes(),
            Path::new("k"),
            key.as_bytes(),
            1_800_000_000,
        )
        .expect("valid")
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let default = cert(&["default.test"]);
        let wild = cert(&["*.example.com"]);
        let exact = cert(&["www.example.com", "Other.Test"]);
        let r = SniResolver::new(&[default.clone(), wild.clone(), exact.clone()]).expect("some");
        let is = |name: Option<&str>, c: &Certificate| Arc::ptr_eq(r.choose(name), &c.key);
        assert!(is(Some("www.example.com"), &exact));
        assert!(is(Some("WWW.Example.com."), &exact));
        assert!(is(Some("other.test"), &exact));
        assert!(is(Some("shop.example.com"), &wild));
        // One label only, and not the parent itself.
        assert!(is(Some("a.shop.example.com"), &default));
        assert!(is(Some("example.com"), &default));
        assert!(is(Some("unknown.test"), &default));
        assert!(is(None, &default));
        assert!(SniResolver::new(&[]).is_none());
    }
}
