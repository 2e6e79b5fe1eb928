//! Picking a node among 64: the balancers alone on prepared candidates, and
//! the whole group pick (health, slow start, load estimate) on a live model.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use webcluster::balance::{BalanceMethod, Candidate};
use webcluster::cluster::node::Load;
use webcluster::cluster::Cluster;
use webcluster::config;

const NODES: usize = 64;

fn candidates() -> Vec<Candidate> {
    let mut rng = fastrand::Rng::with_seed(64);
    (0..NODES)
        .map(|index| Candidate {
            index,
            weight: 1.0 + rng.usize(..4) as f64,
            load: Load {
                busy: rng.usize(..150) as f64,
                capacity: Some(150),
                inflight: rng.u64(..20),
                sent_since_scrape: rng.u64(..50),
                fresh: true,
            },
        })
        .collect()
}

fn group_config(method: &str) -> String {
    let mut s = format!("[[group]]\nname = \"web\"\nbalance = \"{method}\"\nscrape = false\n");
    for i in 0..NODES {
        s.push_str(&format!(
            "  [[group.node]]\n  name = \"n{i}\"\n  address = \"127.0.0.1:{}\"\n",
            10000 + i
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let cands = candidates();
    for method in BalanceMethod::all() {
        let b = method.balancer(NODES);
        c.bench_function(&format!("balancer {method} of 64"), |bench| {
            bench.iter(|| b.pick(black_box(&cands)))
        });
    }
    for method in BalanceMethod::all().map(BalanceMethod::name) {
        let cfg = config::parse(&group_config(method), Path::new("<bench>"))
            .expect("bench config is valid");
        let cluster = Cluster::new(cfg);
        let state = cluster.state();
        let group = &state.groups[0];
        c.bench_function(&format!("group pick {method} of 64"), |bench| {
            bench.iter(|| group.pick(black_box(&[]), Instant::now()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
