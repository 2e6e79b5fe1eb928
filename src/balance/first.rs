//! Example method, compiled in unit tests only (see CONTRIBUTING.md): always
//! the first candidate, i.e. the first usable node in file order, like
//! HAProxy's `balance first`. It shows everything a method file holds.

use super::{Balance, Candidate, Method};

pub static METHOD: Method = Method {
    name: "first",
    new: |_nodes| Box::new(First),
};

#[derive(Debug)]
struct First;

impl Balance for First {
    fn pick(&self, candidates: &[Candidate]) -> Option<usize> {
        candidates.first().map(|c| c.index)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use crate::cluster::Cluster;

    #[test]
    fn a_config_can_name_it_and_groups_use_it() {
        let text = "[[group]]\nname = \"web\"\nbalance = \"first\"\nscrape = false\n\
                    [[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
                    [[group.node]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n";
        let config = crate::config::parse(text, Path::new("<test>")).expect("valid");
        assert_eq!(config.groups[0].balance.name(), "first");
        let cluster = Cluster::new(config);
        let state = cluster.state();
        let group = &state.groups[0];
        for _ in 0..5 {
            assert_eq!(group.pick(&[], Instant::now()), Some(0));
        }
        // with the first one tried, the next
        assert_eq!(group.pick(&[0], Instant::now()), Some(1));
    }

    #[test]
    fn the_unknown_name_error_lists_it() {
        let text = "[[group]]\nname = \"web\"\nbalance = \"random\"\n\
                    [[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
        let err = crate::config::parse(text, Path::new("<test>"))
            .expect_err("unknown method")
            .to_string();
        assert!(
            err.contains(
                "expected \"busyness\", \"round_robin\", \"least_inflight\" or \"first\""
            ),
            "{err}"
        );
    }
}
