//! Routing a request to a group by Host and path prefix.
//!
//! Routes are tried in file order; the first whose host and path prefix
//! match wins (a plain prefix, as nginx's prefix `location`); no match goes
//! to the default group.

use crate::config::RouteConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Subdomain(String),
}

#[derive(Debug, Clone)]
struct Route {
    host: HostMatch,
    prefix: String,
    group: usize,
    /// Index of the route in the config (`Config::routes`).
    index: usize,
}

#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
    default: usize,
}

impl Router {
    /// Compile routes; `group_index` maps a group name to its index (the
    /// config was validated, so every name resolves).
    pub fn new(
        routes: &[RouteConfig],
        default: usize,
        group_index: impl Fn(&str) -> Option<usize>,
    ) -> Router {
        let routes = routes
            .iter()
            .enumerate()
            .filter_map(|(index, r)| {
                let group = group_index(&r.group)?;
                let host = match r.host.as_deref() {
                    None => HostMatch::Any,
                    Some(h) => match h.strip_prefix('*') {
                        Some(suffix) => HostMatch::Subdomain(suffix.to_string()),
                        None => HostMatch::Exact(h.to_string()),
                    },
                };
                Some(Route {
                    host,
                    prefix: r.path_prefix.clone(),
                    group,
                    index,
                })
            })
            .collect();
        Router { routes, default }
    }

    /// The group index for a request with this Host header value (port and
    /// case are ignored) and path.
    pub fn route(&self, host: Option<&str>, path: &str) -> usize {
        let host = host.map(normalise_host);
        self.routes
            .iter()
            .find(|r| host_matches(&r.host, host.as_deref()) && path.starts_with(&r.prefix))
            .map_or(self.default, |r| r.group)
    }

    /// The group index and, when a route matched, that route's index in
    /// `Config::routes` (for its per-route settings).
    pub fn route_with_index(&self, host: Option<&str>, path: &str) -> (usize, Option<usize>) {
        let host = host.map(normalise_host);
        self.routes
            .iter()
            .find(|r| host_matches(&r.host, host.as_deref()) && path.starts_with(&r.prefix))
            .map_or((self.default, None), |r| (r.group, Some(r.index)))
    }
}

fn host_matches(m: &HostMatch, host: Option<&str>) -> bool {
    match (m, host) {
        (HostMatch::Any, _) => true,
        (HostMatch::Exact(want), Some(h)) => h == want,
        (HostMatch::Subdomain(suffix), Some(h)) => h.len() > suffix.len() && h.ends_with(suffix),
        (_, None) => false,
    }
}

/// Lower-case, without port and trailing dot. IPv6 literals keep brackets.
fn normalise_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, group: &str) -> RouteConfig {
        RouteConfig {
            host: host.map(str::to_string),
            path_prefix: path.to_string(),
            group: group.to_string(),
            retry_on_404: false,
            primary: None,
            write_paths: Vec::new(),
            primary_fallback: false,
            request_buffering: None,
            response_buffering: None,
            max_request_body: None,
            https_redirect: false,
            hsts: None,
        }
    }

    fn router() -> Router {
        let names = ["web", "static", "api", "shop"];
        Router::new(
            &[
                route(Some("static.example.com"), "/", "static"),
                route(None, "/api/", "api"),
                route(Some("*.shop.example"), "/", "shop"),
            ],
            0,
            |n| names.iter().position(|g| *g == n),
        )
    }

    #[test]
    fn routes_by_host_and_prefix_in_order() {
        let r = router();
        assert_eq!(r.route(Some("static.example.com"), "/api/x"), 1);
        assert_eq!(r.route(Some("STATIC.example.com:8080"), "/"), 1);
        assert_eq!(r.route(Some("www.example.com"), "/api/v1"), 2);
        assert_eq!(r.route(None, "/api/v1"), 2);
        assert_eq!(r.route(Some("a.shop.example"), "/"), 3);
        assert_eq!(r.route(Some("shop.example"), "/"), 0);
        assert_eq!(r.route(Some("www.example.com"), "/apix"), 0);
        assert_eq!(r.route(None, "/"), 0);
        assert_eq!(r.route_with_index(None, "/api/v1"), (2, Some(1)));
        assert_eq!(r.route_with_index(None, "/"), (0, None));
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalise_host("Example.COM:80"), "example.com");
        assert_eq!(normalise_host("example.com."), "example.com");
        assert_eq!(normalise_host("[::1]:8080"), "[::1]");
        assert_eq!(normalise_host("[::1]"), "[::1]");
    }
}
