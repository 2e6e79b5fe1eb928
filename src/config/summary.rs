//! A human summary of a validated configuration, printed by
//! `webcluster check` (like `nginx -t`) so an operator can see what the
//! proxy will actually do, defaults included.

use std::fmt::Write as _;
use std::time::Duration;

use super::model::{AccessLog, AffinityMode, Config, GroupConfig, QueueOrder, RouteConfig};

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Config {
    /// A human summary for `webcluster check`: listeners, admin, each group
    /// with its method and nodes, routes and the default group.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        let s = &self.server;
        let short_hash = self.hash.get(..12).unwrap_or(&self.hash);
        writeln!(
            out,
            "config {} (sha256 {short_hash})",
            self.source.display()
        )?;
        writeln!(
            out,
            "listen {} ({} thread{}, grace period {}, log level {})",
            list(&s.listen),
            s.threads,
            if s.threads == 1 { "" } else { "s" },
            dur(s.grace_period),
            s.log_level
        )?;
        for (i, t) in self.tls.iter().enumerate() {
            writeln!(
                out,
                "tls #{} listen {} (TLS {}+, session tickets {}, session cache {})",
                i + 1,
                list(&t.listen),
                t.min_version.as_str(),
                if t.session_tickets { "on" } else { "off" },
                t.session_cache
            )?;
            for (n, c) in t.certificates.iter().enumerate() {
                writeln!(
                    out,
                    "  certificate {} for {}{}, expires {}",
                    c.chain_file.display(),
                    c.names.join(", "),
                    if n == 0 { " (default)" } else { "" },
                    crate::tls::certificate::format_time(c.not_after)
                )?;
            }
        }
        writeln!(out, "trusted proxies {}", list(&s.trusted_proxies))?;
        if let Some(pid) = &s.pid_file {
            writeln!(out, "pid file {}", pid.display())?;
        }
        writeln!(out, "upgrade socket {}", s.upgrade_sock.display())?;
        match self.admin.listen {
            Some(addr) => writeln!(out, "admin {addr}, allow {}", list(&self.admin.allow))?,
            None => writeln!(out, "admin disabled")?,
        }
        match &self.access_log {
            AccessLog::Off => writeln!(out, "access log off")?,
            AccessLog::Stdout => writeln!(out, "access log stdout")?,
            AccessLog::File(path) => writeln!(out, "access log {}", path.display())?,
        }
        let t = &self.timeouts;
        writeln!(
            out,
            "timeouts: connect {}, read {}, write {}, idle {}; client read {}, client write {}, client keepalive {}",
            dur(t.connect),
            dur(t.read),
            dur(t.write),
            dur(t.idle),
            dur(t.client_read),
            dur(t.client_write),
            dur(t.client_keepalive)
        )?;
        writeln!(
            out,
            "retries: {} tr{} per request{}",
            self.retries.tries,
            if self.retries.tries == 1 { "y" } else { "ies" },
            if self.retries.idempotent_on_error {
                ", idempotent requests also after errors"
            } else {
                ""
            }
        )?;
        writeln!(out, "protected paths {}", list(&self.protected_paths))?;
        for group in &self.groups {
            write_group(out, group)?;
        }
        for route in &self.routes {
            writeln!(
                out,
                "route {}{} -> {}{}",
                route.host.as_deref().unwrap_or("*"),
                route.path_prefix,
                route.group,
                route_extras(route)
            )?;
        }
        writeln!(out, "default group {}", self.default_group)
    }
}

fn write_group(out: &mut String, g: &GroupConfig) -> std::fmt::Result {
    let passive = if g.max_fails == 0 {
        "passive health off".to_owned()
    } else {
        format!("max_fails {} per {}", g.max_fails, dur(g.fail_timeout))
    };
    let sc = &g.scrape;
    let scrape = if sc.enabled {
        format!(
            "scrape every {} (timeout {}, fall {}, rise {}, stale after {})",
            dur(sc.interval),
            dur(sc.timeout),
            sc.fall,
            sc.rise,
            sc.stale_after
        )
    } else {
        "scrape off".to_owned()
    };
    let slow = if g.slow_start.is_zero() {
        String::new()
    } else {
        format!(", slow start {}", dur(g.slow_start))
    };
    let mut keepalive = format!(", upstream keepalive {}", g.upstream_keepalive.as_str());
    if let Some(t) = g.queue_timeout {
        let _ = write!(keepalive, ", queue timeout {}", dur(t));
    }
    if g.max_queue > 0 {
        let _ = write!(keepalive, ", max queue {}", g.max_queue);
    }
    if g.queue_order != QueueOrder::Adaptive {
        let _ = write!(keepalive, ", queue order {}", g.queue_order.as_str());
    }
    let a = &g.affinity;
    let affinity = match a.mode {
        AffinityMode::Off => String::new(),
        AffinityMode::Cookie => format!(", affinity cookie ({})", a.cookies.join(", ")),
        AffinityMode::Insert => format!(", affinity insert (cookie {})", a.insert_cookie),
    };
    let strict = if a.strict && a.mode != AffinityMode::Off {
        " strict"
    } else {
        ""
    };
    writeln!(
        out,
        "group {} ({}): {passive}, {scrape}{slow}{keepalive}{affinity}{strict}",
        g.name,
        g.balance.name()
    )?;
    if let Some(srv) = &g.srv {
        let workers = srv
            .max_workers
            .map_or(String::new(), |w| format!(", max_workers {w}"));
        writeln!(
            out,
            "  nodes from DNS SRV {}, status {} ({}){workers}",
            srv.name,
            srv.status_path,
            srv.status_kind.name()
        )?;
    }

    let name_w = g.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
    // A host name is shown as written, with what it resolved to at load.
    let addrs: Vec<String> = g
        .nodes
        .iter()
        .map(|n| match &n.host {
            Some(h) if n.address.ip().is_unspecified() => format!("{h}:{}", n.address.port()),
            Some(h) => format!("{h}:{} ({})", n.address.port(), n.address.ip()),
            None => n.address.to_string(),
        })
        .collect();
    let addr_w = addrs.iter().map(String::len).max().unwrap_or(0);
    for (node, addr) in g.nodes.iter().zip(&addrs) {
        let mut flags = String::new();
        if node.backup {
            flags.push_str(" backup");
        }
        if node.drain {
            flags.push_str(" drain");
        }
        if let Some(max) = node.max_workers {
            let _ = write!(flags, " max_workers {max}");
        }
        if let Some(max) = node.max_conns {
            let _ = write!(flags, " max_conns {max}");
        }
        let kind = node.status_kind.name();
        writeln!(
            out,
            "  node {:name_w$}  {:addr_w$}  weight {}{flags}  status {} ({kind}, Host: {})",
            node.name, addr, node.weight, node.status.url, node.status.host
        )?;
    }
    Ok(())
}

/// `, retry on 404, writes to web1 (and /admin/), fallback` for a route.
fn route_extras(r: &RouteConfig) -> String {
    let mut out = String::new();
    if r.retry_on_404 {
        out.push_str(", retry on 404");
    }
    if let Some(p) = &r.primary {
        let _ = write!(out, ", writes to {p}");
        if !r.write_paths.is_empty() {
            let _ = write!(out, " (and {})", r.write_paths.join(", "));
        }
        if r.primary_fallback {
            out.push_str(", fallback to any node");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn summary_mentions_everything() {
        let text = r#"
[[group]]
name = "web"
balance = "round_robin"
affinity = "cookie"
affinity_cookies = ["PHPSESSID"]
  [[group.node]]
  name = "web1"
  address = "127.0.0.1:8001"
  [[group.node]]
  name = "web22"
  address = "127.0.0.1:8002"
  weight = 3
  backup = true
  drain = true
[[route]]
host = "example.com"
path = "/api"
group = "web"
retry_on_404 = true
primary = "web1"
write_paths = ["/admin/"]
"#;
        let config = crate::config::parse(text, Path::new("x.toml")).expect("valid");
        let s = config.summary();
        for needle in [
            "config x.toml (sha256 ",
            "listen 0.0.0.0:8080 (1 thread, grace period 10s, log level info)",
            "admin 127.0.0.1:8081, allow 127.0.0.0/8, ::1/128",
            "access log off",
            "group web (round_robin): max_fails 1 per 10s, scrape every 1s",
            "  node web1   127.0.0.1:8001  weight 1  status http://127.0.0.1:8001/server-status?auto (auto, Host: 127.0.0.1:8001)",
            "  node web22  127.0.0.1:8002  weight 3 backup drain  status",
            "route example.com/api -> web, retry on 404, writes to web1 (and /admin/)",
            "scrape every 1s (timeout 1s, fall 3, rise 2, stale after 3), upstream keepalive auto, affinity cookie (PHPSESSID)",
            "default group web",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in\n{s}");
        }
    }
}
