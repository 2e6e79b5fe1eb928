//! Choosing a node among the usable ones of a group.
//!
//! The group (`cluster::group`) decides which nodes may be chosen (health,
//! drain, backup, nodes already tried); a balancer only ranks the
//! candidates it is given.
//!
//! Every balancing method is one file of this folder that names itself: it
//! defines `pub static METHOD: Method` (its `balance = "..."` name, a line
//! of description and a constructor) and a type implementing [`Balance`].
//! The [`methods!`] list below is the only other place that names it, one
//! line per method; the config (`balance = "<name>"`, its error listing the
//! known names), the status page, the JSON and the benchmarks all go by
//! [`METHODS`]. See CONTRIBUTING.md, "Add a balancing method".

pub mod affinity;

use std::fmt;

use crate::cluster::node::Load;

/// Declares the method modules and [`METHODS`], in this order (the order
/// names are listed in messages). One line per method; attributes such as
/// `#[cfg(test)]` apply to both the module and its registry entry.
macro_rules! methods {
    ($($(#[$attr:meta])* $module:ident,)*) => {
        $($(#[$attr])* pub mod $module;)*

        /// Every balancing method, registered by the `methods!` list.
        pub static METHODS: &[&Method] = &[$($(#[$attr])* &$module::METHOD,)*];
    };
}

methods! {
    busyness,
    round_robin,
    least_inflight,
    #[cfg(test)]
    first,
}

/// A node the balancer may choose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Index of the node in its group.
    pub index: usize,
    /// Configured weight times the slow-start ramp; above 0.
    pub weight: f64,
    pub load: Load,
}

/// A group's balancing method with any state it keeps between picks (one
/// per group and config generation; picks come from every proxy thread).
pub trait Balance: fmt::Debug + Send + Sync {
    /// The chosen node's index in the group (a `Candidate::index`), or None
    /// when there is no candidate.
    fn pick(&self, candidates: &[Candidate]) -> Option<usize>;
}

/// What a method file registers: how it is named and built.
pub struct Method {
    /// The name written in `balance = "..."`, shown on the status page and
    /// in the JSON. Unique among [`METHODS`].
    pub name: &'static str,
    /// A balancer for a group of `nodes` nodes (candidate indices are below
    /// `nodes`).
    pub new: fn(nodes: usize) -> Box<dyn Balance>,
}

/// A registered balancing method, as the config model holds it: a small
/// copyable handle compared by name.
#[derive(Clone, Copy)]
pub struct BalanceMethod(&'static Method);

impl BalanceMethod {
    /// The method of a group whose `balance` is left out.
    pub const DEFAULT: BalanceMethod = BalanceMethod(&busyness::METHOD);

    /// The registered method with this name.
    pub fn named(name: &str) -> Option<BalanceMethod> {
        METHODS
            .iter()
            .find(|m| m.name == name)
            .map(|m| BalanceMethod(m))
    }

    /// Every registered method, in registry order.
    pub fn all() -> impl Iterator<Item = BalanceMethod> {
        METHODS.iter().map(|m| BalanceMethod(m))
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// A fresh balancer of this method for a group of `nodes` nodes.
    pub fn balancer(self, nodes: usize) -> Box<dyn Balance> {
        (self.0.new)(nodes)
    }
}

impl PartialEq for BalanceMethod {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for BalanceMethod {}

impl std::hash::Hash for BalanceMethod {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl fmt::Debug for BalanceMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BalanceMethod({:?})", self.name())
    }
}

impl fmt::Display for BalanceMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, m) in METHODS.iter().enumerate() {
            assert!(
                METHODS[..i].iter().all(|o| o.name != m.name),
                "{} is registered twice",
                m.name
            );
            assert_eq!(BalanceMethod::named(m.name).map(|b| b.name()), Some(m.name));
        }
        assert_eq!(BalanceMethod::named("random"), None);
        assert_eq!(BalanceMethod::DEFAULT.name(), "busyness");
        assert!(BalanceMethod::all().any(|m| m == BalanceMethod::DEFAULT));
    }

    #[test]
    fn every_method_picks_among_the_candidates() {
        let cands: Vec<Candidate> = [1usize, 3]
            .into_iter()
            .map(|index| Candidate {
                index,
                weight: 1.0,
                load: Load {
                    busy: 0.0,
                    capacity: Some(4),
                    inflight: 0,
                    sent_since_scrape: 0,
                    fresh: true,
                },
            })
            .collect();
        for m in BalanceMethod::all() {
            let b = m.balancer(4);
            for _ in 0..10 {
                let i = b.pick(&cands);
                assert!(matches!(i, Some(1 | 3)), "{m}: {i:?}");
            }
            assert_eq!(b.pick(&[]), None, "{m}");
        }
    }
}
