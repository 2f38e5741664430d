//! The controller: one `ClusterTrust` (`federator-system/local`) and everything it projects
//! onto, each watched by name (a field selector on `metadata.name`) so the agent's namespaced
//! Roles suffice: it never lists or watches anything at cluster scope. With remote secrets it
//! also watches the hub's `federator-peers` Secret (by name) and the remote secrets of
//! `istio-system` (by label).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use federator_api::events::Events;
use federator_api::member::ClusterTrust;
use federator_api::names;
use federator_api::plumbing::{self, Backoff, Failures};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
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

/// The retry backoff.
pub const BACKOFF: Backoff = Backoff {
    start: BACKOFF_START,
    max: BACKOFF_MAX,
};

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    opts: Options,
    events: Events,
    failures: Failures,
}

/// The delay before retry number `failures` (1 = the first retry).
pub fn backoff(failures: u32) -> Duration {
    BACKOFF.delay(failures)
}

async fn reconcile(_trigger: Arc<ClusterTrust>, ctx: Arc<Context>) -> Result<Action> {
    let summary = match reconcile_once(&ctx.client, &ctx.opts, &ctx.events).await {
        Ok(s) => s,
        Err(e) => {
            ctx.opts.health.failed(&e.to_string());
            return Err(e);
        }
    };
    ctx.opts.health.reconciled();
    ctx.failures.reset();
    if summary.writes.is_empty() {
        debug!("reconciled: nothing to change");
    } else {
        info!(writes = ?summary.writes, "reconciled");
    }
    Ok(Action::requeue(RESYNC))
}

fn error_policy(_trigger: Arc<ClusterTrust>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failures.record();
    let delay = backoff(failures);
    warn!(%error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// A watch on one object (by name, so a namespaced Role suffices) that emits `()` whenever it
/// is created, changed or deleted; errors (say, no access to `istio-system` yet) are logged
/// and retried without slowing down the other watches ([`plumbing::changes_of`]).
fn changes_of<K>(client: &Client, namespace: &str, name: &str) -> impl Stream<Item = ()> + use<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + DeserializeOwned + Debug + Send + 'static,
{
    plumbing::changes_of(
        watcher(
            Api::<K>::namespaced(client.clone(), namespace),
            plumbing::by_name(name),
        ),
        format!("{} {namespace}/{name}", K::kind(&())),
    )
}

/// Runs the agent until SIGTERM or Ctrl-C.
///
/// The controller watches `ClusterTrust` `federator-system/local`, and reconciles it whenever
/// it or one of the objects it projects onto changes: the agent Secret
/// (`federator-system/federator-cluster-ca`), `istio-system/cacerts`, the `istio` ConfigMap,
/// the istiod Deployment and the `istio-ca-root-cert` ConfigMap istiod publishes. Every watch
/// selects one object by name.
pub async fn run(client: Client, opts: Options) -> Result<()> {
    let events = Events::new(
        client.clone(),
        names::AGENT_FIELD_MANAGER,
        opts.cluster_name.clone(),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        opts,
        events,
        failures: Failures::default(),
    });
    let (own, istio) = (names::NAMESPACE, names::ISTIO_NAMESPACE);
    info!(
        pid = std::process::id(),
        namespace = own,
        cluster_trust = names::CLUSTER_TRUST,
        "cluster-agent watching"
    );
    // Remote secrets are on when join gave the agent the rights for them.
    let remote_secrets = plumbing::access_allowed(
        &client,
        k8s_openapi::api::authorization::v1::ResourceAttributes {
            verb: Some("list".into()),
            resource: Some("secrets".into()),
            namespace: Some(istio.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or(false);
    let mut controller = Controller::new(
        Api::<ClusterTrust>::namespaced(client.clone(), own),
        plumbing::by_name(names::CLUSTER_TRUST),
    );
    if remote_secrets {
        info!("remote secrets: watching the peers Secret and istio-system's remote secrets");
        let selector = format!(
            "{}={}",
            federator_api::remote::MULTI_CLUSTER_LABEL.0,
            federator_api::remote::MULTI_CLUSTER_LABEL.1
        );
        controller = controller
            .reconcile_all_on(changes_of::<Secret>(&client, own, names::PEERS_SECRET))
            .reconcile_all_on(plumbing::changes_of(
                watcher(
                    Api::<Secret>::namespaced(client.clone(), istio),
                    watcher::Config::default().labels(&selector),
                ),
                "remote secrets in istio-system".to_owned(),
            ));
    }
    controller
        .reconcile_all_on(changes_of::<Secret>(&client, own, names::AGENT_KEY_SECRET))
        .reconcile_all_on(changes_of::<Secret>(&client, istio, names::CACERTS_SECRET))
        .reconcile_all_on(changes_of::<ConfigMap>(
            &client,
            istio,
            names::ISTIO_CONFIGMAP,
        ))
        .reconcile_all_on(changes_of::<Deployment>(
            &client,
            istio,
            names::ISTIOD_DEPLOYMENT,
        ))
        .reconcile_all_on(changes_of::<ConfigMap>(
            &client,
            istio,
            names::ISTIO_ROOT_CERT_CONFIGMAP,
        ))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                // Errors of the ClusterTrust watch (API server unreachable, CRD not installed
                // yet); the watcher retries with backoff.
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
