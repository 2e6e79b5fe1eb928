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
    /// Whether a route names a host (else a request's Host is not read).
    by_host: bool,
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
            .collect::<Vec<_>>();
        let by_host = routes.iter().any(|r| r.host != HostMatch::Any);
        Router {
            routes,
            default,
            by_host,
        }
    }

    /// The group index for a request with this Host header value (port and
    /// case are ignored) and path.
    pub fn route(&self, host: Option<&str>, path: &str) -> usize {
        self.route_with_index(|| host, || path).0
    }

    /// The group index and, when a route matched, that route's index in
    /// `Config::routes` (for its per-route settings). The request's host
    /// and path are asked for only when a route needs them: with no routes
    /// neither (every request goes to the default group), with no route
    /// naming a host only the path.
    pub fn route_with_index<'a>(
        &self,
        host: impl FnOnce() -> Option<&'a str>,
        path: impl FnOnce() -> &'a str,
    ) -> (usize, Option<usize>) {
        if self.routes.is_empty() {
            return (self.default, None);
        }
        let host = if self.by_host {
            host().map(normalise_host)
        } else {
            None
        };
        let path = path();
        self.routes
            .iter()
            .find(|r| host_matches(&r.host, host) && path.starts_with(&r.prefix))
            .map_or((self.default, None), |r| (r.group, Some(r.index)))
    }
}

/// Whether `host` (normalised, any case) is what `m` asks for (any case).
fn host_matches(m: &HostMatch, host: Option<&str>) -> bool {
    match (m, host) {
        (HostMatch::Any, _) => true,
        (HostMatch::Exact(want), Some(h)) => h.eq_ignore_ascii_case(want),
        (HostMatch::Subdomain(suffix), Some(h)) => {
            let (h, suffix) = (h.as_bytes(), suffix.as_bytes());
            h.len() > suffix.len() && h[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        (_, None) => false,
    }
}

/// Without port and trailing dot (compared in any case, not copied to
/// lower case). IPv6 literals keep brackets.
fn normalise_host(host: &str) -> &str {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port.trim_end_matches('.')
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

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
                route(Some("Static.Example.com"), "/", "static"),
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
        assert_eq!(r.route(Some("A.SHOP.Example."), "/"), 3);
        // Compared as bytes: no panic on a non-ASCII host.
        assert_eq!(r.route(Some("é.shop.example"), "/"), 3);
        assert_eq!(r.route(Some("éé"), "/"), 0);
        assert_eq!(r.route(Some("shop.example"), "/"), 0);
        assert_eq!(r.route(Some("www.example.com"), "/apix"), 0);
        assert_eq!(r.route(None, "/"), 0);
        assert_eq!(r.route_with_index(|| None, || "/api/v1"), (2, Some(1)));
        assert_eq!(r.route_with_index(|| None, || "/"), (0, None));
    }

    /// What a router asks of a request: with no routes nothing, with
    /// routes by path only the path, with a route by host both.
    #[test]
    fn a_request_is_read_only_as_far_as_the_routes_need() {
        let names = ["web", "api"];
        let index = |n: &str| names.iter().position(|g| *g == n);
        let asked = |r: &Router, path: &str| {
            let (host_asked, path_asked) = (Cell::new(false), Cell::new(false));
            let got = r.route_with_index(
                || {
                    host_asked.set(true);
                    Some("api.example.com")
                },
                || {
                    path_asked.set(true);
                    path
                },
            );
            (got, host_asked.get(), path_asked.get())
        };
        let none = Router::new(&[], 0, index);
        assert_eq!(asked(&none, "/api/x"), ((0, None), false, false));
        let by_path = Router::new(&[route(None, "/api/", "api")], 0, index);
        assert_eq!(asked(&by_path, "/api/x"), ((1, Some(0)), false, true));
        assert_eq!(asked(&by_path, "/x"), ((0, None), false, true));
        let by_host = Router::new(
            &[
                route(None, "/static/", "web"),
                route(Some("api.example.com"), "/", "api"),
            ],
            0,
            index,
        );
        assert_eq!(asked(&by_host, "/x"), ((1, Some(1)), true, true));
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalise_host("Example.COM:80"), "Example.COM");
        assert_eq!(normalise_host("example.com."), "example.com");
        assert_eq!(normalise_host("[::1]:8080"), "[::1]");
        assert_eq!(normalise_host("[::1]"), "[::1]");
    }
}
