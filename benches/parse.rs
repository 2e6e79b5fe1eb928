//! Status page parsing speed, on real captures: the scraper parses one page
//! per node per interval, so this bounds the cost of a large cluster.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use webcluster::status::{apache, nginx, parse};

const APACHE_EVENT: &[u8] = include_bytes!("../tests/data/status-samples/apache24-event-auto.txt");
const NGINX: &[u8] = include_bytes!("../tests/data/status-samples/nginx-stub_status.txt");

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, hint, page) in [
        ("apache24_event_auto", Some(apache::KIND), APACHE_EVENT),
        ("apache24_event_auto_detect", None, APACHE_EVENT),
        ("nginx_stub_status", Some(nginx::KIND), NGINX),
    ] {
        group.throughput(Throughput::Bytes(page.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse(black_box(hint), black_box(page))));
    }
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
