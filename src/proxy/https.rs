//! A route's HTTPS rules: the redirect of plain HTTP requests to HTTPS
//! (`https_redirect`) and the `Strict-Transport-Security` header of its
//! responses over TLS (`hsts_max_age`).
//!
//! A request counts as HTTPS when it came over one of the proxy's TLS
//! listeners, or from a trusted proxy (`trusted_proxies`) that says
//! `X-Forwarded-Proto: https` (a TLS terminator in front: no redirect
//! loop).

use ipnet::IpNet;

use super::http1::RequestHead;
use super::Arrival;
use crate::config::Config;

/// Whether the visitor's request is HTTPS (see the module doc).
pub fn is_https(
    arrival: &Arrival,
    client: Option<std::net::IpAddr>,
    head: &RequestHead,
    trusted: &[IpNet],
) -> bool {
    if arrival.is_tls() {
        return true;
    }
    let from_trusted = client.is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip)));
    from_trusted
        && head
            .fields
            .get_str("x-forwarded-proto")
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// The port HTTPS redirects go to: the first TLS listener's, else 443.
pub fn redirect_port(config: &Config) -> u16 {
    config
        .tls
        .first()
        .and_then(|t| t.listen.first())
        .map_or(443, |a| a.port())
}

/// `https://host[:port]/target` for a request to `host` (its `Host`, with
/// or without a port, which is dropped) and `target` (origin-form: path
/// and query kept); `None` when the host is not a plain host name or IP
/// literal.
pub fn location(host: &str, port: u16, target: &str) -> Option<String> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal, `[::1]` or `[::1]:8080`.
        let end = rest.find(']')?;
        &host[..end + 2]
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    if !valid {
        return None;
    }
    let target = if target.starts_with('/') { target } else { "/" };
    Some(if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_keep_path_and_query_and_take_the_tls_port() {
        assert_eq!(
            location("www.example.com", 443, "/a/b?c=d&e").as_deref(),
            Some("https://www.example.com/a/b?c=d&e")
        );
        assert_eq!(
            location("www.example.com:8080", 8443, "/x").as_deref(),
            Some("https://www.example.com:8443/x")
        );
        assert_eq!(
            location("[::1]:8080", 8443, "/").as_deref(),
            Some("https://[::1]:8443/")
        );
        assert_eq!(
            location("127.0.0.1", 443, "*").as_deref(),
            Some("https://127.0.0.1/")
        );
        assert_eq!(location("evil.test/x", 443, "/"), None);
        assert_eq!(location("", 443, "/"), None);
        assert_eq!(location("a@b", 443, "/"), None);
    }
}
