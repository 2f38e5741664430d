//! The controller: one `ClusterTrust` (`federator-system/local`) and everything it projects
//! onto, watched by name so namespaced Roles suffice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use federator_api::member::ClusterTrust;
use federator_api::names;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tracing::{debug, info, warn};

use crate::reconcile::reconcile_once;
use crate::{Error, Options, Result};

/// How often an unchanged cluster is reconciled anyway: a safety net for missed watch events
/// and for time passing (an installed CA that expires). It reads and writes nothing when
/// nothing changed.
pub const RESYNC: Duration = Duration::from_secs(30 * 60);

/// The first retry delay after a failed reconcile; it doubles with every failure in a row.
pub const BACKOFF_START: Duration = Duration::from_secs(1);

/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(120);

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    opts: Options,
    failures: AtomicU32,
}

/// The delay before retry number `failures` (1 = the first retry).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_START.saturating_mul(1u32 << exp).min(BACKOFF_MAX)
}

async fn reconcile(_trigger: Arc<ClusterTrust>, ctx: Arc<Context>) -> Result<Action> {
    let summary = reconcile_once(&ctx.client, &ctx.opts).await?;
    ctx.failures.store(0, Ordering::Relaxed);
    if summary.writes.is_empty() {
        debug!("reconciled: nothing to change");
    } else {
        info!(writes = ?summary.writes, "reconciled");
    }
    Ok(Action::requeue(RESYNC))
}

fn error_policy(_trigger: Arc<ClusterTrust>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx
        .failures
        .fetch_add(1, Ordering::Relaxed)
        .saturating_add(1);
    let delay = backoff(failures);
    warn!(%error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

fn local() -> Option<ObjectRef<ClusterTrust>> {
    Some(ObjectRef::new(names::CLUSTER_TRUST).within(names::NAMESPACE))
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(client: Client, opts: Options) -> Result<()> {
    let ctx = Arc::new(Context {
        client: client.clone(),
        opts,
        failures: AtomicU32::new(0),
    });
    let own = |c: &Client| Api::<Secret>::namespaced(c.clone(), names::NAMESPACE);
    let istio = names::ISTIO_NAMESPACE;
    info!(
        namespace = names::NAMESPACE,
        cluster_trust = names::CLUSTER_TRUST,
        "cluster-agent watching"
    );
    Controller::new(
        Api::<ClusterTrust>::namespaced(client.clone(), names::NAMESPACE),
        by_name(names::CLUSTER_TRUST),
    )
    .watches(own(&client), by_name(names::AGENT_KEY_SECRET), |_| local())
    .watches(
        Api::<Secret>::namespaced(client.clone(), istio),
        by_name(names::CACERTS_SECRET),
        |_| local(),
    )
    .watches(
        Api::<ConfigMap>::namespaced(client.clone(), istio),
        by_name(names::ISTIO_CONFIGMAP),
        |_| local(),
    )
    .watches(
        Api::<Deployment>::namespaced(client.clone(), istio),
        by_name(names::ISTIOD_DEPLOYMENT),
        |_| local(),
    )
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            // Watch errors (API server unreachable, CRD not installed yet) are retried by
            // the watchers with their own backoff.
            warn!(error = %e, "controller");
        }
    })
    .await;
    info!("cluster-agent stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(8), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
