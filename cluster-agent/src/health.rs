//! What the agent serves on `--metrics-addr` ([`federator_api::serving`]): `/metrics`,
//! `/healthz` (liveness) and `/readyz` (readiness).
//!
//! * `GET /healthz`: 200 while the process serves (the controller ending ends the process).
//! * `GET /readyz`: 200 once a reconcile has succeeded, i.e. the agent reached its API server,
//!   read its `ClusterTrust` and did (or found nothing left to do for) every step; 503 before,
//!   with the last error. It stays ready afterwards: a member whose API server is briefly
//!   unreachable keeps its installed CA, and an unready agent would only stop rollouts.
//! * `GET /metrics`: [`Metrics`].
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `federator_agent_build_info{version}` | gauge | 1, labelled with the agent's version |
//! | `federator_agent_ca_expiry_timestamp_seconds` | gauge | NotAfter of the cluster CA installed in `istio-system/cacerts` (absent until one is) |
//! | `federator_agent_bundle_generation` | gauge | bundle generation installed in `cacerts` |
//! | `federator_agent_cacerts_writes_total` | counter | writes of `istio-system/cacerts` |
//! | `federator_agent_reconcile_errors_total` | counter | reconciles that failed |
//! | `federator_agent_remote_secrets` | gauge | remote secrets the agent keeps in `istio-system` |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use federator_api::member::ClusterTrustStatus;
use federator_api::serving;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Shared between the controller (which reports) and the server (which answers).
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    reconciled: AtomicBool,
    last_error: Mutex<Option<String>>,
    metrics: Metrics,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// No labels; the series appears once a CA is installed (an expiry of 0 would fire every
    /// expiry alert).
    ca_expiry: Family<Vec<(String, String)>, Gauge>,
    bundle_generation: Gauge,
    cacerts_writes: Counter,
    reconcile_errors: Counter,
    remote_secrets: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        federator_api::serving::register_build_info(
            &mut registry,
            "federator_agent_build_info",
            "1, labelled with the agent's version",
            env!("CARGO_PKG_VERSION"),
        );
        let m = Metrics {
            registry: Registry::default(),
            ca_expiry: Family::default(),
            bundle_generation: Gauge::default(),
            cacerts_writes: Counter::default(),
            reconcile_errors: Counter::default(),
            remote_secrets: Gauge::default(),
        };
        registry.register(
            "federator_agent_ca_expiry_timestamp_seconds",
            "NotAfter of the installed cluster CA",
            m.ca_expiry.clone(),
        );
        for (name, help, gauge) in [
            (
                "federator_agent_bundle_generation",
                "Bundle generation installed in cacerts",
                &m.bundle_generation,
            ),
            (
                "federator_agent_remote_secrets",
                "Remote secrets the agent keeps in istio-system",
                &m.remote_secrets,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        // Counters are exposed with the `_total` suffix.
        for (name, help, counter) in [
            (
                "federator_agent_cacerts_writes",
                "Writes of istio-system/cacerts",
                &m.cacerts_writes,
            ),
            (
                "federator_agent_reconcile_errors",
                "Reconciles that failed",
                &m.reconcile_errors,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        serving::render(&self.registry)
    }

    /// What a reconcile reported: the `ClusterTrust` status it wrote (or found current), the
    /// number of `cacerts` writes it made.
    pub fn observe(&self, status: Option<&ClusterTrustStatus>, cacerts_writes: u64) {
        self.cacerts_writes.inc_by(cacerts_writes);
        let Some(status) = status else {
            return;
        };
        if let Some(inst) = &status.installed {
            self.ca_expiry
                .get_or_create(&Vec::new())
                .set(inst.not_after.0.as_second());
            self.bundle_generation.set(inst.bundle_generation);
        }
        let kept = status.remote_secrets.as_ref().map_or(0, |r| r.peers.len());
        self.remote_secrets
            .set(i64::try_from(kept).unwrap_or(i64::MAX));
    }

    /// A reconcile failed.
    pub fn reconcile_failed(&self) {
        self.reconcile_errors.inc();
    }
}

impl Health {
    /// A reconcile succeeded.
    pub fn reconciled(&self) {
        self.inner.reconciled.store(true, Ordering::SeqCst);
        *lock(&self.inner.last_error) = None;
    }

    /// A reconcile failed with `error`.
    pub fn failed(&self, error: &str) {
        self.inner.metrics.reconcile_failed();
        *lock(&self.inner.last_error) = Some(error.to_owned());
    }

    /// Whether the agent is ready (a reconcile has succeeded).
    pub fn is_ready(&self) -> bool {
        self.inner.reconciled.load(Ordering::SeqCst)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

impl serving::Endpoints for Health {
    fn metrics(&self) -> String {
        self.inner.metrics.render()
    }

    fn live(&self) -> Result<(), String> {
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        if self.is_ready() {
            return Ok(());
        }
        Err(match lock(&self.inner.last_error).as_deref() {
            Some(e) => format!("not ready: no reconcile has succeeded yet; last error: {e}"),
            None => "not ready: no reconcile has succeeded yet".to_owned(),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only an Option is swapped under this lock; a poisoned one is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_api::member::{Installed, RemoteSecretsStatus};
    use federator_api::serving::Endpoints;

    #[test]
    fn ready_after_the_first_successful_reconcile() {
        let h = Health::default();
        assert_eq!(h.live(), Ok(()));
        let why = h.ready().unwrap_err();
        assert!(why.contains("no reconcile has succeeded"), "{why}");
        h.failed("cannot read ClusterTrust federator-system/local: connection refused");
        assert!(h.ready().unwrap_err().contains("connection refused"));
        h.reconciled();
        assert_eq!(h.ready(), Ok(()));
        h.failed("later error");
        assert_eq!(h.ready(), Ok(()), "stays ready");
        assert!(
            h.metrics()
                .render()
                .contains("federator_agent_reconcile_errors_total 2\n")
        );
    }

    #[test]
    fn metrics_follow_what_the_reconciles_report() {
        let h = Health::default();
        let text = h.metrics().render();
        assert!(text.contains(&format!(
            "federator_agent_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("federator_agent_cacerts_writes_total 0\n"));
        assert!(
            !text.contains("federator_agent_ca_expiry_timestamp_seconds"),
            "no CA installed yet: {text}"
        );
        let status = ClusterTrustStatus {
            installed: Some(Installed {
                serial: "01".into(),
                sha256: "s".into(),
                not_after: federator_api::fields::parse_time("2027-01-15T08:00:00Z").unwrap(),
                bundle_generation: 4,
                csr_generation: 1,
            }),
            remote_secrets: Some(RemoteSecretsStatus {
                peers: vec!["west".into(), "north".into()],
                ..RemoteSecretsStatus::default()
            }),
            ..ClusterTrustStatus::default()
        };
        h.metrics().observe(Some(&status), 1);
        h.metrics().observe(None, 0);
        let text = h.metrics().render();
        assert!(text.contains("federator_agent_ca_expiry_timestamp_seconds 1800000000\n"));
        assert!(text.contains("federator_agent_bundle_generation 4\n"));
        assert!(text.contains("federator_agent_cacerts_writes_total 1\n"));
        assert!(text.contains("federator_agent_remote_secrets 2\n"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn serves_the_probes_and_metrics_over_http() {
        let h = Health::default();
        let (addr, _server) = serving::serve("127.0.0.1:0".parse().unwrap(), Arc::new(h.clone()))
            .await
            .unwrap();
        let addr = addr.to_string();
        let get = |path| testbed::http::get(&addr, path, None);
        assert_eq!(get("/readyz").await.unwrap().status, 503);
        h.reconciled();
        assert_eq!(get("/readyz").await.unwrap().status, 200);
        assert_eq!(get("/healthz").await.unwrap().status, 200);
        let m = get("/metrics").await.unwrap();
        assert!(m.body.contains("federator_agent_build_info"), "{}", m.body);
    }
}
