//! Certificates that expire soon: a warning in the log two weeks before
//! (at start, after each reload and once a day while running), the same
//! flag on the status page and in `/status.json` (`expiring_soon`), and
//! each certificate's expiry as a metric
//! (`webcluster_tls_certificate_expiry_timestamp_seconds`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::certificate::format_time;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::reload::unix_now;

/// A certificate expiring within this many seconds is warned about.
pub const WARN_BEFORE: i64 = 14 * 86_400;

/// How often the running process looks again.
const CHECK_EVERY: Duration = Duration::from_secs(86_400);

/// Whether a certificate expiring at `not_after` is to be warned about at
/// `now` (both Unix seconds).
pub fn expiring_soon(not_after: i64, now: i64) -> bool {
    not_after - now < WARN_BEFORE
}

/// Log a warning for each certificate of `config` that expires within two
/// weeks of `now` (an error for one that has expired); how many there were.
pub fn warn_expiring(config: &Config, now: i64) -> usize {
    let mut n = 0;
    for (i, listener) in config.tls.iter().enumerate() {
        for c in &listener.certificates {
            if !expiring_soon(c.not_after, now) {
                continue;
            }
            n += 1;
            let names = c.names.join(", ");
            let chain = c.chain_file.display();
            let expires = format_time(c.not_after);
            if c.not_after <= now {
                tracing::error!(
                    listener = i + 1,
                    "TLS certificate {chain} ({names}) EXPIRED on {expires}: renew it and reload"
                );
            } else {
                let days = (c.not_after - now) / 86_400;
                tracing::warn!(
                    listener = i + 1,
                    "TLS certificate {chain} ({names}) expires on {expires} (in {days} days): renew it and reload"
                );
            }
        }
    }
    n
}

/// Looks at the live config's certificates once a day.
pub struct ExpiryWatch {
    cluster: Arc<Cluster>,
}

impl ExpiryWatch {
    pub fn new(cluster: Arc<Cluster>) -> ExpiryWatch {
        ExpiryWatch { cluster }
    }
}

#[async_trait]
impl BackgroundService for ExpiryWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The check at start is `server::build`'s.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    warn_expiring(&self.cluster.state().config, unix_now());
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_weeks_ahead() {
        let now = 1_800_000_000;
        assert!(!expiring_soon(now + WARN_BEFORE, now));
        assert!(expiring_soon(now + WARN_BEFORE - 1, now));
        assert!(expiring_soon(now - 1, now));
    }
}
