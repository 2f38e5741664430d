//! Prometheus metrics of `federator serve` (`prometheus-client`), served with `hyper` on
//! `--metrics-addr` at `/metrics` (OpenMetrics text), with `/healthz` for probes.
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

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::{Error, Result};

/// The label of per-member metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cluster {
    cluster: String,
}

/// The hub's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leader: Gauge,
    members: Gauge,
    bundle_generation: Gauge,
    member_ready: Family<Cluster, Gauge>,
    member_ca_expiry: Family<Cluster, Gauge>,
    member_bundle_generation: Family<Cluster, Gauge>,
    signed: Family<Cluster, Counter>,
    sign_failures: Family<Cluster, Counter>,
    /// Clusters with per-member series, so that a member that left can be forgotten.
    known: Mutex<BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            leader: Gauge::default(),
            members: Gauge::default(),
            bundle_generation: Gauge::default(),
            member_ready: Family::default(),
            member_ca_expiry: Family::default(),
            member_bundle_generation: Family::default(),
            signed: Family::default(),
            sign_failures: Family::default(),
            known: Mutex::default(),
        };
        let mut registry = Registry::default();
        for (name, help, gauge) in [
            ("federator_leader", "1 while this replica acts", &m.leader),
            ("federator_members", "Members of the federation", &m.members),
            (
                "federator_bundle_generation",
                "Current trust bundle generation",
                &m.bundle_generation,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        for (name, help, family) in [
            (
                "federator_member_ready",
                "1 when the member is Ready",
                &m.member_ready,
            ),
            (
                "federator_member_ca_expiry_timestamp_seconds",
                "NotAfter of the installed cluster CA",
                &m.member_ca_expiry,
            ),
            (
                "federator_member_bundle_generation",
                "Bundle generation the member installed",
                &m.member_bundle_generation,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        // Counters are exposed with the `_total` suffix.
        for (name, help, family) in [
            ("federator_signed", "Cluster CAs signed", &m.signed),
            (
                "federator_sign_failures",
                "CSRs refused or not signed",
                &m.sign_failures,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        Metrics { registry, ..m }
    }
}

impl Metrics {
    fn label(&self, cluster: &str) -> Cluster {
        lock(&self.known).insert(cluster.to_owned());
        Cluster {
            cluster: cluster.to_owned(),
        }
    }

    /// Whether this replica acts.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Federation-wide gauges.
    pub fn set_federation(&self, members: i64, bundle_generation: i64) {
        self.members.set(members);
        self.bundle_generation.set(bundle_generation);
    }

    /// A member's state.
    pub fn set_member(&self, cluster: &str, ready: bool, ca_expiry: i64, bundle_generation: i64) {
        let l = self.label(cluster);
        self.member_ready.get_or_create(&l).set(i64::from(ready));
        self.member_ca_expiry.get_or_create(&l).set(ca_expiry);
        self.member_bundle_generation
            .get_or_create(&l)
            .set(bundle_generation);
    }

    /// A cluster CA was signed.
    pub fn signed(&self, cluster: &str) {
        self.signed.get_or_create(&self.label(cluster)).inc();
    }

    /// A CSR was refused or could not be signed.
    pub fn sign_failed(&self, cluster: &str) {
        self.sign_failures.get_or_create(&self.label(cluster)).inc();
    }

    /// Forgets the members not in `names` (they left).
    pub fn retain_members(&self, names: &[String]) {
        let mut known = lock(&self.known);
        for gone in known.iter().filter(|k| !names.contains(k)) {
            let l = Cluster {
                cluster: gone.clone(),
            };
            self.member_ready.remove(&l);
            self.member_ca_expiry.remove(&l);
            self.member_bundle_generation.remove(&l);
            self.signed.remove(&l);
            self.sign_failures.remove(&l);
        }
        known.retain(|k| names.contains(k));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked while holding it; the data is still
    // the last value written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn respond(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (StatusCode::OK, OPENMETRICS, metrics.render()),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Listens on `addr` (failing at once when it cannot) and serves the metrics until the
/// returned handle is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<AbortOnDropHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Usage(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
    info!(%addr, "serving metrics");
    Ok(AbortOnDropHandle::new(tokio::spawn(accept(
        listener, metrics,
    ))))
}

async fn accept(listener: TcpListener, metrics: Arc<Metrics>) {
    // Connections live in this set, so they end with the server.
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "metrics: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let metrics = metrics.clone();
        connections.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(&metrics, req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "metrics connection");
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

    #[tokio::test]
    async fn serves_metrics_and_health_over_http() {
        let metrics = Arc::new(Metrics::default());
        metrics.set_leader(true);
        // Port 0: the kernel picks one; find it through a first bind.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let server = serve(addr, metrics.clone()).await.unwrap();
        assert!(
            serve(addr, metrics.clone()).await.is_err(),
            "a taken address fails at start"
        );
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let m = get("/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("application/openmetrics-text"), "{m}");
        assert!(m.contains("federator_leader 1\n"), "{m}");
        assert!(get("/healthz").await.ends_with("ok\n"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        drop(server);
    }
}
