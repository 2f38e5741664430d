//! Prometheus metrics of `federator serve`, served as text on `--metrics-addr` (`/metrics`).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `federator_leader` | gauge | 1 while this replica acts (holds the Lease, or runs without election) |
//! | `federator_members` | gauge | members of the federation |
//! | `federator_bundle_generation` | gauge | current trust bundle generation |
//! | `federator_member_ready{cluster}` | gauge | 1 when the member is Ready |
//! | `federator_member_ca_expiry_timestamp_seconds{cluster}` | gauge | NotAfter of the member's installed cluster CA |
//! | `federator_member_bundle_generation{cluster}` | gauge | bundle generation the member installed |
//! | `federator_signed_total{cluster}` | counter | cluster CAs signed |
//! | `federator_sign_failures_total{cluster}` | counter | CSRs refused or not signed (Vault down, ...) |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::{Error, Result};

#[derive(Clone, Debug, Default)]
struct Member {
    ready: bool,
    ca_expiry: i64,
    bundle_generation: i64,
    signed: u64,
    sign_failures: u64,
}

/// The hub's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    leader: AtomicI64,
    members: AtomicI64,
    bundle_generation: AtomicI64,
    per_member: Mutex<BTreeMap<String, Member>>,
}

impl Metrics {
    fn member(&self, cluster: &str, f: impl FnOnce(&mut Member)) {
        let mut map = self
            .per_member
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(cluster.to_owned()).or_default());
    }

    /// Whether this replica acts.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(i64::from(leader), Ordering::Relaxed);
    }

    /// Federation-wide gauges.
    pub fn set_federation(&self, members: i64, bundle_generation: i64) {
        self.members.store(members, Ordering::Relaxed);
        self.bundle_generation
            .store(bundle_generation, Ordering::Relaxed);
    }

    /// A member's state.
    pub fn set_member(&self, cluster: &str, ready: bool, ca_expiry: i64, bundle_generation: i64) {
        self.member(cluster, |m| {
            m.ready = ready;
            m.ca_expiry = ca_expiry;
            m.bundle_generation = bundle_generation;
        });
    }

    /// A cluster CA was signed.
    pub fn signed(&self, cluster: &str) {
        self.member(cluster, |m| m.signed += 1);
    }

    /// A CSR was refused or could not be signed.
    pub fn sign_failed(&self, cluster: &str) {
        self.member(cluster, |m| m.sign_failures += 1);
    }

    /// Forgets a member that left.
    pub fn retain_members(&self, names: &[String]) {
        let mut map = self
            .per_member
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|k, _| names.contains(k));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let gauge = |s: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut s,
            "federator_leader",
            "1 while this replica acts.",
            self.leader.load(Ordering::Relaxed),
        );
        gauge(
            &mut s,
            "federator_members",
            "Members of the federation.",
            self.members.load(Ordering::Relaxed),
        );
        gauge(
            &mut s,
            "federator_bundle_generation",
            "Current trust bundle generation.",
            self.bundle_generation.load(Ordering::Relaxed),
        );
        let map = self
            .per_member
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let family = |s: &mut String,
                      name: &str,
                      kind: &str,
                      help: &str,
                      value: &dyn Fn(&Member) -> String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (cluster, m) in &map {
                let _ = writeln!(s, "{name}{{cluster=\"{cluster}\"}} {}", value(m));
            }
        };
        family(
            &mut s,
            "federator_member_ready",
            "gauge",
            "1 when the member is Ready.",
            &|m| u8::from(m.ready).to_string(),
        );
        family(
            &mut s,
            "federator_member_ca_expiry_timestamp_seconds",
            "gauge",
            "NotAfter of the installed cluster CA.",
            &|m| m.ca_expiry.to_string(),
        );
        family(
            &mut s,
            "federator_member_bundle_generation",
            "gauge",
            "Bundle generation the member installed.",
            &|m| m.bundle_generation.to_string(),
        );
        family(
            &mut s,
            "federator_signed_total",
            "counter",
            "Cluster CAs signed.",
            &|m| m.signed.to_string(),
        );
        family(
            &mut s,
            "federator_sign_failures_total",
            "counter",
            "CSRs refused or not signed.",
            &|m| m.sign_failures.to_string(),
        );
        s
    }
}

/// Serves `/metrics` (and `/healthz`) until the task is dropped.
pub async fn serve_metrics(addr: SocketAddr, metrics: std::sync::Arc<Metrics>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Usage(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
    info!(%addr, "serving metrics");
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                _ => ("404 Not Found", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = conn.write_all(response.as_bytes()).await {
                warn!(error = %e, "metrics response");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_exposition_format() {
        let m = Metrics::default();
        m.set_leader(true);
        m.set_federation(2, 3);
        m.set_member("east", true, 1_800_000_000, 3);
        m.signed("east");
        m.sign_failed("west");
        let text = m.render();
        assert!(text.contains("federator_leader 1\n"));
        assert!(text.contains("federator_bundle_generation 3\n"));
        assert!(text.contains("federator_member_ready{cluster=\"east\"} 1\n"));
        assert!(text.contains("federator_signed_total{cluster=\"east\"} 1\n"));
        assert!(text.contains("federator_sign_failures_total{cluster=\"west\"} 1\n"));
        m.retain_members(&["east".into()]);
        assert!(!m.render().contains("west"));
    }
}
