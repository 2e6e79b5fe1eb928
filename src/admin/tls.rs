//! The "TLS certificates" table of the status page: per TLS listener, its
//! addresses and settings, and each certificate's names, subject, file and
//! expiry, flagged when it expires within two weeks (the log warns too).

use maud::{html, Markup};

use crate::cluster::snapshot::TlsListenerSnapshot;
use crate::tls::certificate::format_time;

/// Nothing when there is no TLS listener.
pub fn section(tls: &[TlsListenerSnapshot]) -> Markup {
    if tls.is_empty() {
        return html! {};
    }
    html! {
        section.group {
            h2 { "TLS certificates" }
            table {
                thead { tr {
                    th { "listener" } th { "names (SNI)" } th { "subject" } th { "chain file" }
                    th { "expires" }
                } }
                tbody {
                    @for t in tls {
                        @for (i, c) in t.certificates.iter().enumerate() {
                            tr {
                                td.mono {
                                    (t.listen.join(", "))
                                    div.sub {
                                        "TLS " (t.min_version) "+ · ALPN " (t.alpn.join(", "))
                                        @if i == 0 { " · default" }
                                    }
                                }
                                td.mono { (c.names.join(", ")) }
                                td.mono { (c.subject) }
                                td.mono { (c.chain_file) }
                                td {
                                    (format_time(c.not_after_unix))
                                    " "
                                    @if c.expires_in_days < 0 {
                                        span.bad { "EXPIRED" }
                                    } @else if c.expiring_soon {
                                        span.bad { "in " (c.expires_in_days) " days: renew" }
                                    } @else {
                                        span.sub { "in " (c.expires_in_days) " days" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::snapshot::CertificateSnapshot;

    fn cert(name: &str, days: i64) -> CertificateSnapshot {
        CertificateSnapshot {
            chain_file: format!("/etc/ssl/{name}.pem"),
            key_file: format!("/etc/ssl/{name}.key"),
            names: vec![name.to_owned()],
            subject: format!("CN={name}"),
            issuer: "CN=<issuer>".to_owned(),
            not_before_unix: 0,
            not_after_unix: 1_800_000_000 + days * 86_400,
            expires_in_days: days,
            expiring_soon: days < 14,
        }
    }

    #[test]
    fn near_expiry_is_flagged_and_text_escaped() {
        let t = TlsListenerSnapshot {
            listen: vec!["0.0.0.0:443".to_owned()],
            min_version: "1.2".to_owned(),
            alpn: vec!["http/1.1".to_owned()],
            session_tickets: true,
            session_cache: 20_000,
            certificates: vec![cert("a.test", 80), cert("<b>.test", 5)],
        };
        let page = section(&[t]).into_string();
        assert!(page.contains("in 80 days"), "{page}");
        assert!(page.contains("in 5 days: renew"), "{page}");
        assert!(page.contains("&lt;b&gt;.test"), "{page}");
        assert!(!page.contains("<b>.test"), "{page}");
        assert!(section(&[]).into_string().is_empty());
    }
}
