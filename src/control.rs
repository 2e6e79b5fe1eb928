//! `webcluster node ...`: the client side of the node control API
//! (`admin::api`). Sends one request to the running process's admin listener
//! (`[admin] listen`, an unspecified address asked on loopback) with the
//! token of `[admin] token_file`, and turns the JSON answer into a line for
//! the operator (or an error, for a non-zero exit).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::config::Config;
use crate::proxy::http1::{Body, Limits, ResponseHead};

/// What the `node` command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    List,
    Drain(String),
    Maint(String),
    Ready(String),
    /// A weight `0..=10000`, or `reset` for the config's.
    Weight(String, String),
}

/// Run `cmd` against the webcluster running with `config`; the text to
/// print.
pub fn run(config: &Config, cmd: &NodeCommand) -> anyhow::Result<String> {
    let admin = config.admin.listen.with_context(|| {
        format!(
            "{}: the admin listener is disabled; `webcluster node` talks to it",
            config.source.display()
        )
    })?;
    let (method, path) = match cmd {
        NodeCommand::List => ("GET", "/api/nodes".to_owned()),
        NodeCommand::Drain(n) => ("POST", format!("/api/nodes/{}/drain", node_path(n)?)),
        NodeCommand::Maint(n) => ("POST", format!("/api/nodes/{}/maint", node_path(n)?)),
        NodeCommand::Ready(n) => ("POST", format!("/api/nodes/{}/ready", node_path(n)?)),
        NodeCommand::Weight(n, w) => {
            if w != "reset" && w.parse::<u32>().is_err() {
                bail!("weight {w:?} is not a whole number from 0 to 10000 (or \"reset\")");
            }
            (
                "POST",
                format!("/api/nodes/{}/weight?value={w}", node_path(n)?),
            )
        }
    };
    let token = match (&config.admin.token_file, method) {
        (_, "GET") => None,
        (None, _) => bail!(
            "{}: no [admin] token_file: set one (and reload) to change nodes at run time",
            config.source.display()
        ),
        (Some(p), _) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the admin token file {}", p.display()))?
                .trim()
                .to_owned(),
        ),
    };
    let (status, json) = request(admin, method, &path, token.as_deref())?;
    if status != 200 {
        let why = json["error"].as_str().unwrap_or("no reason given");
        bail!("the running webcluster answered {status}: {why}");
    }
    Ok(match cmd {
        NodeCommand::List => json["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().map(line).collect())
            .unwrap_or_default(),
        _ => {
            let prev = &json["previous"];
            let was = format!(
                "was {}{}",
                prev["state"].as_str().unwrap_or("?"),
                prev["weight"]
                    .as_u64()
                    .map_or(String::new(), |w| format!(", weight {w}"))
            );
            format!("{} ({was})\n", line(&json).trim_end())
        }
    })
}

/// `group/node` as two path segments.
fn node_path(n: &str) -> anyhow::Result<String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match n.split_once('/') {
        Some((g, node)) if ok(g) && ok(node) => Ok(format!("{g}/{node}")),
        _ => bail!("{n:?}: name a node as GROUP/NODE, e.g. web/web2"),
    }
}

/// One node as a line: `web/web2  drain  weight 5 (config 3)`.
fn line(n: &Value) -> String {
    let s = |k: &str| n[k].as_str().unwrap_or("?").to_owned();
    let config_weight = n["config_weight"].as_u64();
    let weight = match (n["weight"].as_u64(), config_weight) {
        (Some(w), Some(c)) => format!("weight {w} (config {c})"),
        (Some(w), None) => format!("weight {w}"),
        (None, Some(c)) => format!("weight {c}"),
        (None, None) => String::new(),
    };
    let drain = if n["config_drain"].as_bool() == Some(true) {
        "  (drain = true in the config)"
    } else {
        ""
    };
    format!(
        "{}/{}  {}  {weight}{drain}\n",
        s("group"),
        s("node"),
        s("state")
    )
}

/// One request to the admin listener (an unspecified address is asked on
/// loopback): (status, JSON body). Also how `webcluster reload --wait`
/// reads the reload counters.
pub fn request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut addr = admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot reach the admin listener on {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body_len = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}{body_len}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr}{path}"))?;
    let mut head = ResponseHead::default();
    let len = head
        .parse(&raw, &Limits::default())
        .ok()
        .flatten()
        .with_context(|| format!("{addr}{path}: not an HTTP response"))?;
    if head.status == 403
        && raw
            .get(len..)
            .is_some_and(|b| b.starts_with(b"403 Forbidden"))
    {
        bail!("{addr} refused the request (is this host in [admin] allow?)");
    }
    let method = http::Method::from_bytes(method.as_bytes())?;
    let framing = head
        .framing(&method)
        .map_err(|e| anyhow::anyhow!("{addr}{path}: {e}"))?;
    let mut body = Vec::new();
    Body::new(framing)
        .advance(&raw[len..], Some(&mut body))
        .map_err(|e| anyhow::anyhow!("{addr}{path}: {e}"))?;
    let json = serde_json::from_slice(&body).with_context(|| {
        format!(
            "{addr}{path} answered {} without JSON (an older webcluster?)",
            head.status
        )
    })?;
    Ok((head.status, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_group_slash_node() {
        assert_eq!(node_path("web/web2").expect("ok"), "web/web2");
        assert!(node_path("web2").is_err());
        assert!(node_path("web/").is_err());
        assert!(node_path("web/a/b").is_err());
        assert!(node_path("web/a?x").is_err());
    }
}
