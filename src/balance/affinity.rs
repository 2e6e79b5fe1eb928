//! Session affinity: the order in which a session tries a group's nodes.
//!
//! Rendezvous (highest random weight) hashing: every node gets a score from
//! a hash of (node name, session key); the session's node is the one with
//! the highest score, and when it cannot serve, the next highest, and so on.
//! Because the score depends only on the node's NAME and the key:
//!
//! - several webcluster instances in front of the same nodes send a session
//!   to the same node with no shared state (node order in the file, indices
//!   and addresses do not matter);
//! - removing a node (or a node going down) moves only the sessions whose
//!   highest score was that node; every other session keeps its node.
//!
//! Weights are honoured with the logarithmic method (score = weight / -ln u,
//! u uniform in (0, 1) from the hash), so a node of weight 2 gets about
//! twice the sessions of a node of weight 1.
//!
//! The hash must be the same in every build and on every machine, so
//! `std::hash` (whose algorithm may change between Rust releases) is not
//! used: FNV-1a 64 over the bytes, finished with the splitmix64 mixer (FNV
//! alone mixes its last bytes poorly). Both are fixed, published algorithms;
//! changing them would move every session, so they must never change.

/// FNV-1a, 64 bits, over several byte strings separated by a 0xff byte
/// (which cannot occur in UTF-8, so ("ab","c") and ("a","bc") differ).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(PRIME);
        }
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// The splitmix64 finaliser: spreads every input bit over the output.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable 64-bit hash used for affinity.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    mix64(fnv1a64(parts))
}

/// The rendezvous score of node `name` (of weight `weight` > 0) for `key`.
pub fn score(key: &[u8], name: &str, weight: f64) -> f64 {
    let h = stable_hash(&[b"webcluster-affinity", name.as_bytes(), key]);
    // 53 random bits to a float strictly inside (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight / -u.ln()
}

/// A node that may take sessions: its index in the group, name and weight.
#[derive(Debug, Clone, Copy)]
pub struct SessionNode<'a> {
    pub index: usize,
    pub name: &'a str,
    pub weight: f64,
    /// Backups come after every other node, whatever their score.
    pub backup: bool,
}

/// The order in which the session `key` tries `nodes`: non-backup nodes by
/// descending score, then backup nodes by descending score. Nodes of
/// weight 0 are left out. Ties (practically impossible) go by name.
pub fn rank(key: &[u8], nodes: &[SessionNode<'_>]) -> Vec<usize> {
    let mut scored: Vec<(bool, f64, &str, usize)> = nodes
        .iter()
        .filter(|n| n.weight > 0.0)
        .map(|n| (n.backup, score(key, n.name, n.weight), n.name, n.index))
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(b.2)));
    scored.into_iter().map(|s| s.3).collect()
}

/// The opaque id of a node in `insert` mode's cookie: 16 hex digits of a
/// keyed hash of the group and node names. It does not reveal the node's
/// address, and every webcluster instance computes the same id.
pub fn node_id(group: &str, node: &str) -> String {
    format!(
        "{:016x}",
        stable_hash(&[b"webcluster-node-id", group.as_bytes(), node.as_bytes()])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes<'a>(names: &[&'a str]) -> Vec<SessionNode<'a>> {
        names
            .iter()
            .enumerate()
            .map(|(index, name)| SessionNode {
                index,
                name,
                weight: 1.0,
                backup: false,
            })
            .collect()
    }

    #[test]
    fn fnv1a64_known_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_ne!(fnv1a64(&[b"ab", b"c"]), fnv1a64(&[b"a", b"bc"]));
    }

    #[test]
    fn the_hash_never_changes() {
        // Pinned: a change here moves every session of every deployment.
        assert_eq!(node_id("web", "web1"), "4604bd09c2279121");
        assert_ne!(node_id("web", "web1"), node_id("web", "web2"));
        assert_ne!(node_id("web", "web1"), node_id("web1", "web"));
        assert_eq!(stable_hash(&[b"abc"]), mix64(fnv1a64(&[b"abc"])));
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
    }

    #[test]
    fn order_depends_on_names_not_positions() {
        let a = nodes(&["web1", "web2", "web3"]);
        let b = nodes(&["web3", "web1", "web2"]);
        for i in 0..200 {
            let key = format!("session-{i}");
            let name_a: Vec<&str> = rank(key.as_bytes(), &a)
                .iter()
                .map(|&i| a[i].name)
                .collect();
            let name_b: Vec<&str> = rank(key.as_bytes(), &b)
                .iter()
                .map(|&i| b[i].name)
                .collect();
            assert_eq!(name_a, name_b);
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_sessions() {
        let all = nodes(&["web1", "web2", "web3", "web4"]);
        let without: Vec<SessionNode> = all.iter().copied().filter(|n| n.name != "web3").collect();
        let mut moved = 0;
        for i in 0..2000 {
            let key = format!("s{i}");
            let before = all[rank(key.as_bytes(), &all)[0]].name;
            let after_index = rank(key.as_bytes(), &without)[0];
            let after = all[after_index].name;
            if before == "web3" {
                moved += 1;
                // It goes to its second choice.
                assert_eq!(after, all[rank(key.as_bytes(), &all)[1]].name);
            } else {
                assert_eq!(before, after, "session {key} moved off {before}");
            }
        }
        assert!((350..650).contains(&moved), "web3 had {moved} of 2000");
    }

    #[test]
    fn sessions_spread_by_weight() {
        let mut n = nodes(&["a", "b", "c"]);
        n[2].weight = 2.0;
        let mut counts = [0usize; 3];
        for i in 0..8000 {
            counts[rank(format!("k{i}").as_bytes(), &n)[0]] += 1;
        }
        // Expected 2000 / 2000 / 4000.
        assert!((1700..2300).contains(&counts[0]), "{counts:?}");
        assert!((1700..2300).contains(&counts[1]), "{counts:?}");
        assert!((3600..4400).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn backups_last_and_weight_zero_never() {
        let mut n = nodes(&["a", "b", "c"]);
        n[0].backup = true;
        n[2].weight = 0.0;
        for i in 0..100 {
            assert_eq!(rank(format!("k{i}").as_bytes(), &n), vec![1, 0]);
        }
    }
}
