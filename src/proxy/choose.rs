//! Which node a request goes to when something other than load decides:
//! a write goes to its route's primary node, a request of a session to the
//! session's node (rendezvous order of its cookie, or the node named by the
//! proxy's own cookie), everything else to the group's balancer. Also the
//! cookies that keep sessions on their node.

use std::time::Instant;

use super::http1::{RequestHead, ResponseHead};

use super::{Proxy, RequestCtx};
use crate::clock;
use crate::cluster::affinity::SwitchReason;
use crate::cluster::group::Group;
use crate::config::{AffinityMode, RouteConfig};

/// What ties a request to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SessionKey {
    /// `cookie` mode: the value of the application's session cookie.
    Hash(String),
    /// `insert` mode: the value of the proxy's own cookie (may be unknown).
    NodeId(String),
    /// `insert` mode, no cookie yet: balanced by load, a cookie is set.
    NewInsert,
}

impl Proxy {
    /// The node for this attempt: a write's primary, a session's node, or
    /// the balancer's choice. `Err(body)` answers 503 (primary down without
    /// fallback, or a strict session whose node cannot serve).
    pub(super) fn choose(
        &self,
        group: &Group,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Option<usize>, String> {
        let now = clock::now();
        if ctx.retried_404 > 0 {
            // Looking for the file on the other nodes: any node will do.
            return Ok(group.pick(&ctx.tried, now));
        }
        if let Some(primary) = ctx.primary {
            if group.node_available(primary, &ctx.tried, now) {
                return Ok(Some(primary));
            }
            let fallback = ctx
                .route
                .and_then(|i| ctx.state.config.routes.get(i))
                .is_some_and(|r| r.primary_fallback);
            let st = &group.stats;
            if fallback {
                st.primary_fallback();
                return Ok(group.pick(&ctx.tried, now));
            }
            st.primary_unavailable();
            return Err(primary_down_body(&group.nodes[primary].config.name));
        }
        let strict = group.config.affinity.strict;
        let switch = |home: usize, reason: SwitchReason| {
            self.metrics
                .affinity_switches
                .with_label_values(&[group.name(), reason.as_str()])
                .inc();
            tracing::debug!(
                group = group.name(),
                node = group.nodes[home].config.name.as_str(),
                reason = reason.as_str(),
                "session moved to another node"
            );
        };
        match ctx.session.clone() {
            None => Ok(group.pick(&ctx.tried, now)),
            Some(SessionKey::Hash(key)) => {
                let st = &group.stats;
                // A pin (the session was created on another node than its
                // hash node) names the session's node.
                let pinned = ctx.pin.as_deref().and_then(|id| group.node_by_id(id));
                let mut tried = ctx.tried.clone();
                let mut pin_switch = None;
                if let Some(pin) = pinned {
                    match self.named_node_reason(group, pin, &ctx.tried, now) {
                        None => {
                            st.session_request(&group.nodes[pin].config.name, None);
                            return Ok(Some(pin));
                        }
                        Some(reason) => {
                            tried.push(pin);
                            pin_switch = Some((pin, reason));
                        }
                    }
                }
                let Some(mut p) = group.pick_for_session(key.as_bytes(), true, &tried, now) else {
                    return Ok(None);
                };
                if let Some((pin, reason)) = pin_switch {
                    p.home = pin;
                    p.switched = Some(reason);
                }
                let home = group.nodes[p.home].config.name.as_str();
                if let Some(reason) = p.switched {
                    if strict {
                        st.strict_refusal();
                        return Err(session_down_body(home));
                    }
                    switch(p.home, reason);
                }
                st.session_request(
                    &group.nodes[p.index].config.name,
                    p.switched.map(|r| (home, r)),
                );
                Ok(Some(p.index))
            }
            Some(SessionKey::NodeId(id)) => {
                let st = &group.stats;
                let Some(home) = group.node_by_id(&id) else {
                    // Unknown id (node removed, other cluster, forged):
                    // a new session.
                    let picked = group.pick(&ctx.tried, now);
                    if let Some(i) = picked {
                        ctx.set_cookie = Some(insert_cookie(group, i));
                        st.cookie_set();
                    }
                    return Ok(picked);
                };
                let name = group.nodes[home].config.name.as_str();
                let Some(reason) = self.named_node_reason(group, home, &ctx.tried, now) else {
                    st.session_request(name, None);
                    return Ok(Some(home));
                };
                if strict {
                    st.strict_refusal();
                    return Err(session_down_body(name));
                }
                let picked = group.pick(&[&ctx.tried[..], &[home]].concat(), now);
                if let Some(i) = picked {
                    switch(home, reason);
                    st.session_request(&group.nodes[i].config.name, Some((name, reason)));
                    if reason == SwitchReason::Down {
                        // The session moves for good: name its new node.
                        ctx.set_cookie = Some(insert_cookie(group, i));
                        st.cookie_set();
                    }
                }
                Ok(picked)
            }
            Some(SessionKey::NewInsert) => {
                let picked = group.pick(&ctx.tried, now);
                if let Some(i) = picked {
                    ctx.set_cookie = Some(insert_cookie(group, i));
                    if ctx.tried.is_empty() {
                        group.stats.cookie_set();
                    }
                }
                Ok(picked)
            }
        }
    }

    /// Why a session's node named by a cookie (insert id or pin) cannot take
    /// this request; None when it can. An existing session keeps its node
    /// even while it drains.
    fn named_node_reason(
        &self,
        group: &Group,
        index: usize,
        tried: &[usize],
        now: Instant,
    ) -> Option<SwitchReason> {
        let up = !tried.contains(&index) && group.nodes[index].usable(now);
        if !up {
            Some(SwitchReason::Down)
        } else if group.saturated(index, now)
            && group.any_unsaturated(&[tried, &[index]].concat(), now)
        {
            Some(SwitchReason::Saturated)
        } else {
            None
        }
    }
}

pub(super) fn primary_down_body(node: &str) -> String {
    format!(
        "503 Service Unavailable: the write target of this site (primary node \"{node}\") is unavailable; nothing was changed, try again later\n"
    )
}

pub(super) fn session_down_body(node: &str) -> String {
    format!(
        "503 Service Unavailable: the node that holds this session (\"{node}\") is unavailable\n"
    )
}

/// Whether the request changes content: any method but GET, HEAD and
/// OPTIONS, or a path under the route's write prefixes.
pub(super) fn is_write(route: &RouteConfig, req: &RequestHead) -> bool {
    let m = &req.method;
    let safe = m == http::Method::GET || m == http::Method::HEAD || m == http::Method::OPTIONS;
    !safe
        || route
            .write_paths
            .iter()
            .any(|p| req.path().starts_with(p.as_str()))
}

/// The primary node (index in `group`) a write must go to, if any.
pub(super) fn write_target(route: &RouteConfig, group: &Group, req: &RequestHead) -> Option<usize> {
    let primary = route.primary.as_deref()?;
    if !is_write(route, req) {
        return None;
    }
    group.node_index(primary)
}

/// The value of cookie `name` in the request's Cookie headers.
pub(super) fn cookie_value<'a>(req: &'a RequestHead, name: &str) -> Option<&'a str> {
    req.fields
        .get_all_str("cookie")
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The session a request belongs to under its group's affinity mode.
pub(super) fn session_key(group: &Group, req: &RequestHead) -> Option<SessionKey> {
    let a = &group.config.affinity;
    match a.mode {
        AffinityMode::Off => None,
        AffinityMode::Cookie => a
            .cookies
            .iter()
            .find_map(|name| cookie_value(req, name))
            .map(|v| SessionKey::Hash(v.to_owned())),
        AffinityMode::Insert => Some(
            cookie_value(req, &a.insert_cookie)
                .map_or(SessionKey::NewInsert, |v| SessionKey::NodeId(v.to_owned())),
        ),
    }
}

/// The `Set-Cookie` value naming node `index` of `group` (`insert` mode).
pub(super) fn insert_cookie(group: &Group, index: usize) -> String {
    format!(
        "{}={}; Path=/; HttpOnly; SameSite=Lax",
        group.config.affinity.insert_cookie,
        group.node_id(index)
    )
}

/// `cookie` mode: when the node's response starts a session (sets one of
/// the session cookies) and that node is not the session's hash node, the
/// `Set-Cookie` that pins the session to it, so the state the application
/// stored there during this request is not lost (and a new session never
/// lands on a draining node). When the node is the hash node and the request
/// carried a pin, the `Set-Cookie` that removes the pin.
pub(super) fn pin_cookie(resp: &ResponseHead, ctx: &RequestCtx) -> Option<String> {
    let group = ctx.group()?;
    let a = &group.config.affinity;
    if a.mode != AffinityMode::Cookie || ctx.current.is_none() {
        return None;
    }
    let served = *ctx.tried.last()?;
    let value = resp
        .fields
        .get_all_str("set-cookie")
        .filter_map(|v| v.split(';').next()?.trim().split_once('='))
        .find(|(name, _)| a.cookies.iter().any(|c| c == name))
        .map(|(_, v)| v.trim().trim_matches('"'))?;
    if value.is_empty() || value == "deleted" {
        return None;
    }
    if group.session_order(value.as_bytes()).first() != Some(&served) {
        group.stats.cookie_set();
        Some(insert_cookie(group, served))
    } else if ctx.pin.is_some() {
        Some(format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
            a.insert_cookie
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, cookies: &[&str]) -> RequestHead {
        let cookies: String = cookies.iter().map(|c| format!("Cookie: {c}\r\n")).collect();
        let raw = format!("{method} {path} HTTP/1.1\r\nHost: a\r\n{cookies}\r\n");
        let mut r = RequestHead::default();
        r.parse(raw.as_bytes(), &Default::default())
            .expect("request")
            .expect("complete");
        r
    }

    fn route(primary: Option<&str>, write_paths: &[&str]) -> RouteConfig {
        RouteConfig {
            host: None,
            path_prefix: "/".to_owned(),
            group: "web".to_owned(),
            retry_on_404: false,
            primary: primary.map(str::to_owned),
            write_paths: write_paths.iter().map(|p| (*p).to_owned()).collect(),
            primary_fallback: false,
            request_buffering: None,
            response_buffering: None,
            max_request_body: None,
            https_redirect: false,
            hsts: None,
        }
    }

    #[test]
    fn cookie_values() {
        let r = req(
            "GET",
            "/",
            &["a=1; PHPSESSID=abc123 ; b=2", "WCNODE=\"0011\""],
        );
        assert_eq!(cookie_value(&r, "PHPSESSID"), Some("abc123"));
        assert_eq!(cookie_value(&r, "WCNODE"), Some("0011"));
        assert_eq!(cookie_value(&r, "b"), Some("2"));
        assert_eq!(cookie_value(&r, "phpsessid"), None);
        assert_eq!(cookie_value(&r, "missing"), None);
        let r = req("GET", "/", &["PHPSESSID="]);
        assert_eq!(cookie_value(&r, "PHPSESSID"), None);
        let r = req("GET", "/", &["XPHPSESSID=1"]);
        assert_eq!(cookie_value(&r, "PHPSESSID"), None);
    }

    #[test]
    fn writes() {
        let r = route(Some("web1"), &["/bitrix/admin/"]);
        assert!(!is_write(&r, &req("GET", "/index.php", &[])));
        assert!(!is_write(&r, &req("HEAD", "/", &[])));
        assert!(!is_write(&r, &req("OPTIONS", "/", &[])));
        assert!(is_write(&r, &req("POST", "/form", &[])));
        assert!(is_write(&r, &req("PUT", "/x", &[])));
        assert!(is_write(&r, &req("DELETE", "/x", &[])));
        assert!(is_write(&r, &req("PATCH", "/x", &[])));
        assert!(is_write(&r, &req("GET", "/bitrix/admin/index.php", &[])));
        assert!(!is_write(&r, &req("GET", "/bitrix/adminx", &[])));
    }
}
