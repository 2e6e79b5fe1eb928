//! `X-Forwarded-For`, `X-Real-IP` and `X-Forwarded-Proto` for the request
//! sent to a node (`upstream::write_request_head` writes them, with
//! `X-Forwarded-Port`). The proxy's own scheme is `https` for a visitor that
//! came over a TLS listener (`Arrival`), else `http`.
//!
//! A client's own `X-Forwarded-For` is kept (and appended to) only when the
//! client is a trusted proxy; from anyone else it is replaced, so a visitor
//! cannot make a node log or trust an address of its choosing. `X-Real-IP`
//! is the first untrusted address walking the chain from the right (nginx's
//! `real_ip_recursive on`).

use std::net::IpAddr;

use ipnet::IpNet;

/// The forwarded header values for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub x_forwarded_for: String,
    pub x_real_ip: String,
    pub x_forwarded_proto: String,
}

/// Compute the headers from the client address, the client's own headers
/// (all `X-Forwarded-For` lines, in order) and the trusted networks.
pub fn forwarded(
    client: IpAddr,
    client_xff: &[&str],
    client_proto: Option<&str>,
    trusted: &[IpNet],
    own_proto: &str,
) -> Forwarded {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&client) {
        return Forwarded {
            x_forwarded_for: client.to_string(),
            x_real_ip: client.to_string(),
            x_forwarded_proto: own_proto.to_string(),
        };
    }
    let chain: Vec<&str> = client_xff
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut x_forwarded_for = chain.join(", ");
    if !x_forwarded_for.is_empty() {
        x_forwarded_for.push_str(", ");
    }
    x_forwarded_for.push_str(&client.to_string());
    // Walk from the right past trusted hops; stop at garbage.
    let mut real = client;
    for hop in chain.iter().rev() {
        if !is_trusted(&real) {
            break;
        }
        match hop.parse::<IpAddr>() {
            Ok(ip) => real = ip,
            Err(_) => break,
        }
    }
    let proto = client_proto
        .map(str::trim)
        .filter(|p| matches!(p.to_ascii_lowercase().as_str(), "http" | "https"))
        .unwrap_or(own_proto);
    Forwarded {
        x_forwarded_for,
        x_real_ip: real.to_string(),
        x_forwarded_proto: proto.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_client_cannot_spoof() {
        let f = forwarded(
            ip("203.0.113.9"),
            &["1.2.3.4"],
            Some("https"),
            &nets(&["10.0.0.0/8"]),
            "http",
        );
        assert_eq!(f.x_forwarded_for, "203.0.113.9");
        assert_eq!(f.x_real_ip, "203.0.113.9");
        assert_eq!(f.x_forwarded_proto, "http");
    }

    #[test]
    fn trusted_proxy_chain_is_kept_and_appended() {
        let t = nets(&["10.0.0.0/8"]);
        let f = forwarded(
            ip("10.0.0.5"),
            &["198.51.100.7, 10.0.0.9", "10.1.1.1"],
            Some("HTTPS"),
            &t,
            "http",
        );
        assert_eq!(
            f.x_forwarded_for,
            "198.51.100.7, 10.0.0.9, 10.1.1.1, 10.0.0.5"
        );
        assert_eq!(f.x_real_ip, "198.51.100.7");
        assert_eq!(f.x_forwarded_proto, "https");
    }

    #[test]
    fn trusted_proxy_without_header() {
        let f = forwarded(ip("10.0.0.5"), &[], None, &nets(&["10.0.0.0/8"]), "http");
        assert_eq!(f.x_forwarded_for, "10.0.0.5");
        assert_eq!(f.x_real_ip, "10.0.0.5");
    }

    #[test]
    fn garbage_in_chain_stops_the_walk() {
        let f = forwarded(
            ip("10.0.0.5"),
            &["1.1.1.1, junk"],
            Some("gopher"),
            &nets(&["10.0.0.0/8"]),
            "http",
        );
        assert_eq!(f.x_real_ip, "10.0.0.5");
        assert_eq!(f.x_forwarded_for, "1.1.1.1, junk, 10.0.0.5");
        assert_eq!(f.x_forwarded_proto, "http");
    }
}
