//! `/ready` on the admin listener: whether this instance can serve, for a
//! floating address (keepalived's `track_script`), an L4 balancer's health
//! check or a Kubernetes readiness probe. `/healthz` only says the process
//! answers.
//!
//! Ready (200 `ready`) when the process is not stopping (SIGTERM or a
//! binary upgrade under way) and the default group has a node that can take
//! a request: weight above 0, not draining, not down (active or passive
//! health) and, when the group reads status pages, known up. `/ready?all`
//! asks that of every group. Otherwise 503 with the reason, one line.

use std::time::Instant;

use crate::cluster::group::Group;
use crate::cluster::Cluster;

/// `Ok` with the body, or `Err` with the reason.
pub fn readiness(cluster: &Cluster, every_group: bool) -> Result<String, String> {
    if cluster.is_stopping() {
        return Err("not ready: stopping".to_owned());
    }
    let state = cluster.state();
    let now = Instant::now();
    let mut unusable: Vec<&str> = Vec::new();
    for g in &state.groups {
        let asked = every_group || g.name() == state.config.default_group;
        if asked && !can_serve(g, now) {
            unusable.push(g.name());
        }
    }
    if unusable.is_empty() {
        Ok("ready\n".to_owned())
    } else {
        Err(format!(
            "not ready: no usable node in group {}",
            unusable
                .iter()
                .map(|g| format!("{g:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Whether some node of the group can take a request now.
fn can_serve(g: &Group, now: Instant) -> bool {
    g.nodes.iter().any(|n| {
        n.config.weight > 0
            && !n.config.drain
            && n.live
                .balance_view(&g.config, &n.config, now)
                .is_some_and(|v| v.known_up || !g.config.scrape.enabled)
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn not_ready_until_a_node_is_known_up_nor_while_stopping() {
        let text = "[[group]]\nname = \"web\"\n[[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
                    [[group]]\nname = \"other\"\nscrape = false\n[[group.node]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n";
        let cluster = Cluster::new(crate::config::parse(text, Path::new("t")).expect("valid"));
        assert_eq!(
            readiness(&cluster, false),
            Err("not ready: no usable node in group \"web\"".to_owned())
        );
        cluster.set_stopping();
        assert_eq!(
            readiness(&cluster, true),
            Err("not ready: stopping".to_owned())
        );
    }
}
