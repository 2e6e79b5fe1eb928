//! The resolver service: asks every name of the config again when its
//! answer expires, records the outcome in the cluster's `Book` and swaps in
//! the new expansion when an answer changed it.
//!
//! Lookups use `hickory-resolver` (the Hickory DNS project's resolver):
//! pure Rust, so no libc `getaddrinfo` blocking a thread and no C library;
//! async on tokio, which the proxy already runs on; and it gives each
//! answer's TTL (`valid_until`), which `getaddrinfo` hides. It asks the
//! name servers of `/etc/resolv.conf` (with its `search` and `ndots`, and
//! `/etc/hosts` first), or only those of `[discovery] nameservers` when
//! that is set (a Consul agent's DNS port, a test's own server). TTLs are
//! clamped to `[discovery] min_ttl` and `max_ttl` (by hickory's cache and
//! again here); a failed name is asked again after `min_ttl`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{Query, Records, SrvTarget};
use crate::cluster::Cluster;
use crate::config::Discovery;
use crate::metrics::Metrics;

/// Longest wait between two looks at what is due (a reload may add names).
const TICK: Duration = Duration::from_secs(1);
/// Most SRV targets taken from one answer.
const MAX_TARGETS: usize = 256;

pub struct DnsService {
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
}

impl DnsService {
    pub fn new(cluster: Arc<Cluster>, metrics: Arc<Metrics>) -> DnsService {
        DnsService { cluster, metrics }
    }

    /// Ask every due name once; swap in the new expansion if it changed.
    async fn round(&self, resolver: &mut Option<(Discovery, TokioResolver)>) -> Option<Instant> {
        let (settings, due, next) = self.cluster.dns.due(Instant::now());
        if due.is_empty() {
            return next;
        }
        if resolver.as_ref().is_none_or(|(d, _)| *d != settings) {
            match build(&settings) {
                Ok(r) => *resolver = Some((settings.clone(), r)),
                Err(e) => tracing::error!("DNS: cannot set up the resolver: {e}"),
            }
        }
        let mut changed = false;
        for (query, groups) in &due {
            let result = match resolver.as_ref() {
                Some((_, r)) => lookup(r, query).await,
                None => Err("no resolver (see the log)".to_owned()),
            };
            let label = if result.is_ok() { "success" } else { "failure" };
            for g in groups {
                self.metrics
                    .dns_resolutions
                    .with_label_values(&[g.as_str(), label])
                    .inc();
            }
            let before = self
                .cluster
                .dns
                .status()
                .into_iter()
                .find(|s| s.name == query.name() && s.kind == query.kind())
                .and_then(|s| s.last_error);
            if let Err(e) = &result {
                if before.is_none() {
                    tracing::warn!(
                        "DNS: {} {} failed, keeping the last answer: {e}",
                        query.kind(),
                        query.name()
                    );
                }
            } else if before.is_some() {
                tracing::info!("DNS: {} {} resolves again", query.kind(), query.name());
            }
            changed |=
                self.cluster
                    .dns
                    .record(query, result, Instant::now(), crate::cluster::unix_now());
        }
        if changed {
            if let Some(diff) = self.cluster.rediscovered() {
                tracing::info!("DNS: nodes changed: {diff}");
            }
        }
        self.cluster.dns.due(Instant::now()).2
    }
}

/// A resolver for these settings.
fn build(d: &Discovery) -> Result<TokioResolver, String> {
    let mut builder = if d.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("/etc/resolv.conf: {e}"))?
    } else {
        let mut config = ResolverConfig::new();
        for addr in &d.nameservers {
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.positive_min_ttl = Some(d.min_ttl);
    opts.positive_max_ttl = Some(d.max_ttl);
    opts.negative_min_ttl = Some(d.min_ttl);
    opts.negative_max_ttl = Some(d.min_ttl);
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    Ok(builder.build())
}

/// One lookup: sorted records and until when they hold. An empty answer is
/// an error (the last good one stays).
async fn lookup(r: &TokioResolver, query: &Query) -> Result<(Records, Instant), String> {
    match query {
        Query::Host(name) => {
            let found = r
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let mut ips: Vec<IpAddr> = found.iter().collect();
            ips.sort();
            ips.dedup();
            if ips.is_empty() {
                return Err(format!("{name}: no address"));
            }
            Ok((Records::Ips(ips), found.valid_until()))
        }
        Query::Srv(name) => {
            let found = r
                .srv_lookup(name.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let mut valid_until = found.as_lookup().valid_until();
            let mut targets = Vec::new();
            for srv in found.iter().take(MAX_TARGETS) {
                let target = srv.target().to_utf8();
                let target = target.trim_end_matches('.').to_owned();
                // The address from the answer's additional section, else
                // asked for.
                let extra = found.as_lookup().record_iter().find_map(|rec| {
                    let same = rec.name().to_utf8().trim_end_matches('.') == target;
                    match rec.data() {
                        RData::A(a) if same => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) if same => Some(IpAddr::V6(a.0)),
                        _ => None,
                    }
                });
                let ip = match extra {
                    Some(ip) => ip,
                    None => {
                        let ips = r
                            .lookup_ip(target.as_str())
                            .await
                            .map_err(|e| format!("SRV target {target}: {e}"))?;
                        valid_until = valid_until.min(ips.valid_until());
                        ips.iter()
                            .min()
                            .ok_or_else(|| format!("SRV target {target}: no address"))?
                    }
                };
                targets.push(SrvTarget {
                    priority: srv.priority(),
                    target,
                    port: srv.port(),
                    weight: srv.weight(),
                    ip,
                });
            }
            targets.sort();
            targets.dedup();
            if targets.is_empty() {
                return Err(format!("{name}: no SRV targets"));
            }
            Ok((Records::Srv(targets), valid_until))
        }
    }
}

#[async_trait]
impl BackgroundService for DnsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut resolver = None;
        loop {
            let next = self.round(&mut resolver).await;
            let wait = next
                .map_or(TICK, |t| t.saturating_duration_since(Instant::now()))
                .clamp(Duration::from_millis(50), TICK);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
