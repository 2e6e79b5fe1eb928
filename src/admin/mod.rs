//! The admin listener: the cluster status page (HTML), its JSON, Apache's
//! `?auto` format with cluster totals, and Prometheus metrics.
//!
//! It only renders a `ClusterSnapshot` (and the metrics registry); it never
//! picks a node. Every request is first checked against the allow list:
//! any other source gets a bare 403 and learns nothing else.

pub mod api;
pub mod auto;
pub mod dns;
pub mod page;
pub mod ready;
#[cfg(test)]
pub(crate) mod sample;
pub mod tls;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::cluster::Cluster;
use crate::metrics::Metrics;

/// What a path on the admin listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Page,
    Json,
    Auto,
    Metrics,
    Health,
    /// `/ready`: whether this instance can serve (`ready.rs`); `/ready?all`
    /// for every group.
    Ready {
        every_group: bool,
    },
    NotFound,
}

impl View {
    /// Map a request target to a view (`?format=json` also selects JSON).
    pub fn of(path: &str, query: Option<&str>) -> View {
        let has = |k: &str| {
            query.is_some_and(|q| {
                q.split('&')
                    .any(|p| p == k || p.starts_with(&format!("{k}=")))
            })
        };
        match path.trim_end_matches('/') {
            "" | "/index.html" if has("format=json") || query == Some("json") => View::Json,
            "" | "/index.html" => View::Page,
            "/status.json" => View::Json,
            "/server-status" if has("auto") => View::Auto,
            "/server-status" => View::Page,
            "/metrics" => View::Metrics,
            "/healthz" => View::Health,
            "/ready" => View::Ready {
                every_group: has("all"),
            },
            _ => View::NotFound,
        }
    }
}

pub struct AdminApp {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
}

impl AdminApp {
    pub fn new(cluster: Arc<Cluster>, metrics: Arc<Metrics>) -> AdminApp {
        AdminApp { cluster, metrics }
    }

    fn allowed(&self, ip: Option<IpAddr>) -> bool {
        let state = self.cluster.state();
        ip.is_some_and(|ip| state.config.admin.allow.iter().any(|n| n.contains(&ip)))
    }

    /// Body and content type for a view.
    pub fn render(&self, view: View) -> (StatusCode, &'static str, Vec<u8>) {
        const TEXT: &str = "text/plain; charset=utf-8";
        match view {
            View::Page => (
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(&self.cluster.snapshot()).into_bytes(),
            ),
            View::Json => match serde_json::to_vec_pretty(&self.cluster.snapshot()) {
                Ok(body) => (StatusCode::OK, "application/json", body),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("cannot encode the status: {e}\n").into_bytes(),
                ),
            },
            View::Auto => (
                StatusCode::OK,
                "text/plain; charset=ISO-8859-1",
                auto::render(&self.cluster.snapshot()).into_bytes(),
            ),
            View::Metrics => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(&self.cluster.snapshot()).into_bytes(),
            ),
            View::Health => (StatusCode::OK, TEXT, b"ok\n".to_vec()),
            View::Ready { every_group } => match ready::readiness(&self.cluster, every_group) {
                Ok(body) => (StatusCode::OK, TEXT, body.into_bytes()),
                Err(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("{why}\n").into_bytes(),
                ),
            },
            View::NotFound => (StatusCode::NOT_FOUND, TEXT, b"404 Not Found\n".to_vec()),
        }
    }
}

fn response(code: StatusCode, content_type: &str, body: Vec<u8>, head: bool) -> Response<Vec<u8>> {
    let len = body.len();
    let builder = Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff");
    let body = if head { Vec::new() } else { body };
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// Answer a node control API request (`api`), as JSON.
fn api_response(cluster: &Cluster, session: &ServerSession, head: bool) -> Response<Vec<u8>> {
    let req = session.req_header();
    let auth = req.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let answer = api::handle(cluster, &req.method, req.uri.path(), req.uri.query(), auth);
    let mut body = serde_json::to_vec_pretty(&answer.body).unwrap_or_default();
    body.push(b'\n');
    let mut resp = response(answer.status, "application/json", body, head);
    if answer.ask_token {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"webcluster admin\""),
        );
    }
    resp
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if !self.allowed(ip) {
            tracing::info!(client = ?ip, "admin request refused: not in the allow list");
            return response(
                StatusCode::FORBIDDEN,
                "text/plain",
                b"403 Forbidden\n".to_vec(),
                false,
            );
        }
        let req = session.req_header();
        let head = req.method == Method::HEAD;
        if req.uri.path().starts_with(api::PREFIX) {
            return api_response(&self.cluster, session, head);
        }
        if req.method != Method::GET && !head {
            return response(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"405 Method Not Allowed\n".to_vec(),
                false,
            );
        }
        let view = View::of(req.uri.path(), req.uri.query());
        let (code, content_type, body) = self.render(view);
        response(code, content_type, body, head)
    }
}

#[cfg(test)]
mod tests {
    use super::View;

    #[test]
    fn paths_map_to_views() {
        assert_eq!(View::of("/", None), View::Page);
        assert_eq!(View::of("/", Some("format=json")), View::Json);
        assert_eq!(View::of("/status.json", None), View::Json);
        assert_eq!(View::of("/server-status", Some("auto")), View::Auto);
        assert_eq!(
            View::of("/server-status", Some("refresh=5&auto")),
            View::Auto
        );
        assert_eq!(View::of("/server-status", None), View::Page);
        assert_eq!(View::of("/metrics", None), View::Metrics);
        assert_eq!(View::of("/healthz", None), View::Health);
        assert_eq!(
            View::of("/ready", Some("all")),
            View::Ready { every_group: true }
        );
        assert_eq!(View::of("/etc/passwd", None), View::NotFound);
    }
}
