//! A certificate as the config names it: a PEM chain file and a PEM key
//! file, read, checked and parsed once, when the config is loaded or
//! reloaded.
//!
//! Everything that can be wrong with the pair is found here, so that a
//! config that loads always serves: a file that cannot be read, a chain
//! with no certificate, a key file with no key or a key of a kind rustls
//! cannot sign with, a key that is not the certificate's, a certificate
//! that has expired (or is not valid yet). The names it answers for come
//! from its subjectAltName DNS entries, or its subject's common name when
//! it has none (as browsers no longer accept, but nginx and HAProxy still
//! match on).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A loaded certificate, its key, and what the proxy shows about it.
#[derive(Clone)]
pub struct Certificate {
    /// The PEM file with the certificate, then its intermediates.
    pub chain_file: PathBuf,
    /// The PEM file with its private key.
    pub key_file: PathBuf,
    /// DNS names it answers for, lower case (`*.example.com` for a
    /// wildcard), from subjectAltName, else the common name.
    pub names: Vec<String>,
    /// The subject, as `CN=example.com, O=...`.
    pub subject: String,
    /// The issuer, the same way.
    pub issuer: String,
    /// Validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The chain and signing key as rustls serves them.
    pub key: Arc<CertifiedKey>,
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.chain_file == other.chain_file
            && self.key_file == other.key_file
            && self.key.cert == other.key.cert
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("chain_file", &self.chain_file)
            .field("key_file", &self.key_file)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Which of the two files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Chain,
    Key,
}

/// Why a certificate cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CertificateError {
    /// The file at fault.
    pub part: Part,
    pub message: String,
}

fn fail<T>(part: Part, message: impl Into<String>) -> Result<T, CertificateError> {
    Err(CertificateError {
        part,
        message: message.into(),
    })
}

impl Certificate {
    /// Read and check the pair; `now` (Unix seconds) is when it must be
    /// valid.
    pub fn load(
        chain_file: &Path,
        key_file: &Path,
        now: i64,
    ) -> Result<Certificate, CertificateError> {
        let chain_pem = read(chain_file, Part::Chain)?;
        let key_pem = read(key_file, Part::Key)?;
        Certificate::from_pem(chain_file, &chain_pem, key_file, &key_pem, now)
    }

    /// As [`Certificate::load`], from the files' bytes.
    pub fn from_pem(
        chain_file: &Path,
        chain_pem: &[u8],
        key_file: &Path,
        key_pem: &[u8],
        now: i64,
    ) -> Result<Certificate, CertificateError> {
        let chain_name = chain_file.display();
        let key_name = key_file.display();
        let mut chain = Vec::new();
        for item in CertificateDer::pem_slice_iter(chain_pem) {
            match item {
                Ok(der) => chain.push(der),
                Err(e) => return fail(Part::Chain, format!("{chain_name}: bad PEM: {e}")),
            }
        }
        if chain.is_empty() {
            return fail(
                Part::Chain,
                format!("{chain_name} holds no certificate (no \"BEGIN CERTIFICATE\" block)"),
            );
        }
        let key = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(key) => key,
            Err(rustls::pki_types::pem::Error::NoItemsFound) => {
                return fail(
                    Part::Key,
                    format!("{key_name} holds no private key (no \"BEGIN ... PRIVATE KEY\" block)"),
                )
            }
            Err(e) => return fail(Part::Key, format!("{key_name}: bad PEM: {e}")),
        };
        let provider = super::provider();
        let signing = match provider.key_provider.load_private_key(key) {
            Ok(k) => k,
            Err(e) => {
                return fail(
                    Part::Key,
                    format!(
                    "{key_name}: not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519): {e}"
                ),
                )
            }
        };
        let parsed = match x509_parser::parse_x509_certificate(&chain[0]) {
            Ok((_, c)) => c,
            Err(e) => {
                return fail(
                    Part::Chain,
                    format!("{chain_name}: the first certificate cannot be read: {e}"),
                )
            }
        };
        let certified = CertifiedKey::new(chain.clone(), signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return fail(
                    Part::Key,
                    format!(
                        "{key_name} is not the private key of the certificate in {chain_name} \
                         (their public keys differ)"
                    ),
                )
            }
        }
        let validity = parsed.validity();
        let not_before = validity.not_before.timestamp();
        let not_after = validity.not_after.timestamp();
        let subject = parsed.subject().to_string();
        if now > not_after {
            return fail(
                Part::Chain,
                format!(
                    "the certificate in {chain_name} ({subject}) expired on {}",
                    format_time(not_after)
                ),
            );
        }
        if now < not_before {
            return fail(
                Part::Chain,
                format!(
                    "the certificate in {chain_name} ({subject}) is not valid before {}",
                    format_time(not_before)
                ),
            );
        }
        let mut names = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    push_name(&mut names, dns);
                }
            }
        }
        if names.is_empty() {
            for cn in parsed.subject().iter_common_name() {
                if let Ok(cn) = cn.as_str() {
                    push_name(&mut names, cn);
                }
            }
        }
        Ok(Certificate {
            chain_file: chain_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            names,
            subject,
            issuer: parsed.issuer().to_string(),
            not_before,
            not_after,
            key: Arc::new(certified),
        })
    }
}

fn read(path: &Path, part: Part) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).or_else(|e| fail(part, format!("cannot read {}: {e}", path.display())))
}

fn push_name(names: &mut Vec<String>, name: &str) {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if !name.is_empty() && !names.contains(&name) {
        names.push(name);
    }
}

/// `2026-12-05 23:40 UTC` for Unix seconds.
pub fn format_time(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `names` valid from `from` to `to`
    /// (Unix seconds), and its key, as PEM.
    pub(crate) fn self_signed(names: &[&str], from: i64, to: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("time");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(to).expect("time");
        let cert = params.self_signed(&key).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn load(chain: &str, key: &str) -> Result<Certificate, CertificateError> {
        Certificate::from_pem(
            Path::new("c.pem"),
            chain.as_bytes(),
            Path::new("k.pem"),
            key.as_bytes(),
            NOW,
        )
    }

    #[test]
    fn names_dates_and_key_are_read() {
        let (chain, key) = self_signed(&["Example.com", "*.example.com"], NOW - DAY, NOW + DAY);
        let c = load(&chain, &key).expect("loads");
        assert_eq!(c.names, ["example.com", "*.example.com"]);
        assert_eq!(c.not_after, NOW + DAY);
        assert_eq!(c.key.cert.len(), 1);
    }

    #[test]
    fn every_fault_is_named_with_its_file() {
        let (chain, key) = self_signed(&["a.test"], NOW - DAY, NOW + DAY);
        let (_, other_key) = self_signed(&["a.test"], NOW - DAY, NOW + DAY);
        let e = load(&chain, &other_key).unwrap_err();
        assert_eq!(e.part, Part::Key);
        assert!(e.message.contains("not the private key"), "{e}");
        let e = load(&key, &key).unwrap_err();
        assert_eq!(e.part, Part::Chain);
        assert!(e.message.contains("no certificate"), "{e}");
        let e = load(&chain, &chain).unwrap_err();
        assert_eq!(e.part, Part::Key);
        assert!(e.message.contains("no private key"), "{e}");
        let (old, old_key) = self_signed(&["a.test"], NOW - 3 * DAY, NOW - DAY);
        let e = load(&old, &old_key).unwrap_err();
        assert_eq!(e.part, Part::Chain);
        assert!(e.message.contains("expired"), "{e}");
        let e =
            Certificate::load(Path::new("/nonexistent/c.pem"), Path::new("k"), NOW).unwrap_err();
        assert_eq!(e.part, Part::Chain);
        assert!(e.message.contains("/nonexistent/c.pem"), "{e}");
    }
}
