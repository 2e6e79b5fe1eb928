//! The node control API on the admin listener (`cluster::operator`):
//!
//! - `GET /api/nodes`: every node's operator state;
//! - `GET /api/nodes/<group>/<node>`: one node's;
//! - `POST /api/nodes/<group>/<node>/drain|maint|ready`;
//! - `POST /api/nodes/<group>/<node>/weight?value=N` (`0..=10000`, or
//!   `value=reset` for the config's weight again).
//!
//! The allow list is checked before this (`admin::AdminApp`). Changes also
//! need `Authorization: Bearer <token>`, the token being the content of
//! `[admin] token_file` (read on each change, so it can be replaced without
//! a reload): without a token file the API answers 403, without the right
//! token 401. Answers are JSON: the node's state (`previous` too for a
//! change), or `{"error": "..."}`.

use http::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cluster::operator::{Change, ControlError, NodeControl, OperatorState};
use crate::cluster::Cluster;

/// Where the API lives on the admin listener.
pub const PREFIX: &str = "/api/";

/// An API answer: status, JSON body, and whether to ask for a bearer token
/// (`WWW-Authenticate`).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub ask_token: bool,
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({ "error": message.into() }),
        ask_token: false,
    }
}

fn ok(body: Value) -> Answer {
    Answer {
        status: StatusCode::OK,
        body,
        ask_token: false,
    }
}

fn node_json(n: &NodeControl) -> Value {
    json!({
        "group": n.group,
        "node": n.node,
        "state": n.state,
        "weight": n.weight,
        "config_weight": n.config_weight,
        "config_drain": n.config_drain,
    })
}

/// Answer one API request. `authorization` is the request's
/// `Authorization` header, if any.
pub fn handle(
    cluster: &Cluster,
    method: &Method,
    path: &str,
    query: Option<&str>,
    authorization: Option<&[u8]>,
) -> Answer {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return error(StatusCode::NOT_FOUND, "not an API path");
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let read = method == Method::GET || method == Method::HEAD;
    match parts.as_slice() {
        ["nodes"] if read => {
            let nodes: Vec<Value> = cluster.node_controls().iter().map(node_json).collect();
            ok(json!({ "nodes": nodes }))
        }
        ["nodes", group, node] if read => match cluster.node_control(group, node) {
            Ok(n) => ok(node_json(&n)),
            Err(e) => control_error(e),
        },
        ["nodes"] | ["nodes", _, _] => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here: use GET"),
        ),
        ["nodes", group, node, action] => {
            if method != Method::POST {
                return error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed here: use POST"),
                );
            }
            if let Err(refused) = check_token(cluster, authorization) {
                tracing::info!("node control request for {group}/{node} refused: {}", refused.body["error"]);
                return refused;
            }
            let change = match parse_change(action, query) {
                Ok(c) => c,
                Err(e) => return e,
            };
            match cluster.control_node(group, node, change, "the admin API") {
                Ok((before, after)) => {
                    let mut body = node_json(&after);
                    body["previous"] = json!({ "state": before.state, "weight": before.weight });
                    ok(body)
                }
                Err(e) => control_error(e),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such API path: GET /api/nodes, GET /api/nodes/<group>/<node>, POST /api/nodes/<group>/<node>/drain|maint|ready, POST /api/nodes/<group>/<node>/weight?value=N|reset",
        ),
    }
}

fn control_error(e: ControlError) -> Answer {
    match e {
        ControlError::UnknownNode(m) => error(StatusCode::NOT_FOUND, m),
        ControlError::BadValue(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

fn parse_change(action: &str, query: Option<&str>) -> Result<Change, Answer> {
    if let Some(s) = OperatorState::parse(action) {
        return Ok(Change::State(s));
    }
    if action != "weight" {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("{action:?} is not an action: drain, maint, ready or weight"),
        ));
    }
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|p| p.strip_prefix("value="));
    match value {
        None => Err(error(
            StatusCode::BAD_REQUEST,
            "weight needs ?value=N (0 to 10000) or ?value=reset",
        )),
        Some("reset") => Ok(Change::Weight(None)),
        Some(v) => v
            .parse::<u32>()
            .map(|w| Change::Weight(Some(w)))
            .map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("weight {v:?} is not a whole number from 0 to 10000 (or \"reset\")"),
                )
            }),
    }
}

/// Whether the request carries the token of `[admin] token_file`.
fn check_token(cluster: &Cluster, authorization: Option<&[u8]>) -> Result<(), Answer> {
    let state = cluster.state();
    let Some(path) = state.config.admin.token_file.as_deref() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "changing nodes is disabled: set [admin] token_file",
        ));
    };
    let token = match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        Ok(_) => {
            tracing::warn!("the admin token file {} is empty", path.display());
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the admin token file is empty",
            ));
        }
        Err(e) => {
            tracing::warn!("cannot read the admin token file {}: {e}", path.display());
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the admin token file",
            ));
        }
    };
    let given = authorization
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let Some(given) = given else {
        return Err(Answer {
            ask_token: true,
            ..error(
                StatusCode::UNAUTHORIZED,
                "missing token: send Authorization: Bearer <token from [admin] token_file>",
            )
        });
    };
    if !same_secret(given.as_bytes(), token.as_bytes()) {
        return Err(Answer {
            ask_token: true,
            ..error(StatusCode::UNAUTHORIZED, "wrong token")
        });
    }
    Ok(())
}

/// Compare two secrets in time that does not depend on where they differ
/// (nor on their lengths): their SHA-256 digests, every byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The status page's badges for what the operator set on a node: DRAIN,
/// MAINT, and the weight when it overrides the config's.
pub fn badges(n: &crate::cluster::snapshot::NodeSnapshot) -> maud::Markup {
    let state = match n.operator_state {
        OperatorState::Ready => None,
        OperatorState::Drain => Some("DRAIN"),
        OperatorState::Maint => Some("MAINT"),
    };
    maud::html! {
        @if let Some(word) = state {
            span.tag.operator title="set by the operator (webcluster node / admin API)" { (word) }
        }
        @if let Some(w) = n.operator_weight {
            span.tag.operator title=(format!("weight set by the operator; the config says {}", n.weight)) {
                "weight " (w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cluster(admin: &str) -> Cluster {
        let text = format!(
            "[admin]\n{admin}\n[[group]]\nname = \"web\"\n[[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:8001\"\n"
        );
        Cluster::new(crate::config::parse(&text, Path::new("t.toml")).expect("valid"))
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }

    #[test]
    fn changes_need_the_token() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").expect("write");
        let post = Method::POST;
        let drain = "/api/nodes/web/a/drain";

        let none = cluster("");
        let a = handle(&none, &post, drain, None, Some(b"Bearer s3cret"));
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert!(a.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("token_file")));

        let c = cluster(&format!("token_file = {:?}", token.display().to_string()));
        assert_eq!(
            handle(&c, &post, drain, None, None).status,
            StatusCode::UNAUTHORIZED
        );
        let wrong = handle(&c, &post, drain, None, Some(b"Bearer nope"));
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.ask_token);
        assert_eq!(
            c.node_control("web", "a").expect("a").state,
            OperatorState::Ready
        );
        let good = handle(&c, &post, drain, None, Some(b"Bearer s3cret"));
        assert_eq!(good.status, StatusCode::OK, "{}", good.body);
        assert_eq!(good.body["state"], "drain");
        assert_eq!(good.body["previous"]["state"], "ready");

        let auth = Some(&b"bearer s3cret"[..]);
        let w = "/api/nodes/web/a/weight";
        assert_eq!(
            handle(&c, &post, w, Some("value=5"), auth).body["weight"],
            5
        );
        assert_eq!(
            handle(&c, &post, w, Some("value=x"), auth).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            handle(&c, &post, w, Some("value=10001"), auth).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            handle(&c, &post, w, None, auth).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            handle(&c, &post, w, Some("value=reset"), auth).body["weight"],
            Value::Null
        );
        let unknown = handle(&c, &post, "/api/nodes/web/zz/maint", None, auth);
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(
            handle(&c, &post, "/api/nodes/web/a/reboot", None, auth).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            handle(&c, &Method::GET, drain, None, auth).status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let list = handle(&c, &Method::GET, "/api/nodes", None, None);
        assert_eq!(list.body["nodes"][0]["state"], "drain");
    }
}
