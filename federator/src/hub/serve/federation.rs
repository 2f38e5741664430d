//! The federation controller: a kube-runtime `Controller` on the `Federation` object, with
//! the `MemberCluster`s (kept in a reflector store) and the roots Secret (a rotation started
//! from the CLI changes only this) mapped onto it.
//!
//! One reconcile: the trust domains in use get a root, the signer is (re)loaded when the
//! roots changed, [`plan::federation::plan`] decides, and its results are written — rotation
//! records into the roots Secret, the Federation status (only when it differs), events, the
//! [`Desired`](crate::hub::plan::federation::Desired) state every member controller follows
//! — and the member controllers are made to follow membership. A drain deadline requeues at
//! that time; a failure requeues with backoff.
//!
//! The foreign SPIFFE trust domains (their own CRD, fetched by [`super::foreign`]) come in
//! the same way: a reflector mapped onto the Federation, and a field of
//! [`plan::federation::Inputs`]; new federation-wide inputs follow that pattern.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use federator_api::foreign::ForeignTrustDomain;
use federator_api::hub::{Federation, MemberCluster};
use federator_api::names;
use federator_api::plumbing::{self, Failures};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::fleet::Fleet;
use super::{BACKOFF, Shared};
use crate::hub::plan::{self, rotation::Record};
use crate::hub::trust::roots::local_root_options;
use crate::hub::trust::signer::Signer;
use crate::hub::trust::store::RootStore;
use crate::{Error, Result};

/// What the federation reconcile works with.
pub struct Context {
    shared: Arc<Shared>,
    members: Store<MemberCluster>,
    foreign: Store<ForeignTrustDomain>,
    roots: RootStore,
    /// The roots Secret's resourceVersion the loaded signer came from.
    signer_version: Mutex<String>,
    fleet: Fleet,
    failures: Failures,
}

/// With a bundle endpoint, a rotation keeps the old root published for at least this many
/// refresh hints (SPIFFE Federation §4.1: new keys 3–5 refresh hints ahead).
pub const MIN_DRAIN_REFRESH_HINTS: u32 = 3;

/// Runs the federation controller until the hub's watches end.
pub async fn run(shared: Arc<Shared>) -> Result<()> {
    let client = shared.client.clone();
    let (members, writer) = reflector::store();
    let member_changes = plumbing::changes_of(
        reflector::reflector(
            writer,
            watcher(
                Api::<MemberCluster>::namespaced(client.clone(), names::NAMESPACE),
                watcher::Config::default(),
            )
            // managedFields are not needed and would be kept N times.
            .modify(|m| m.managed_fields_mut().clear()),
        ),
        format!("MemberClusters in {}", names::NAMESPACE),
    );
    let (foreign, foreign_writer) = reflector::store();
    let foreign_changes = plumbing::changes_of(
        reflector::reflector(
            foreign_writer,
            watcher(
                Api::<ForeignTrustDomain>::namespaced(client.clone(), names::NAMESPACE),
                watcher::Config::default(),
            ),
        ),
        format!("ForeignTrustDomains in {}", names::NAMESPACE),
    );
    let roots_changes = plumbing::changes_of(
        watcher(
            Api::<Secret>::namespaced(client.clone(), names::NAMESPACE),
            plumbing::by_name(names::ROOTS_SECRET),
        ),
        format!("Secret {}/{}", names::NAMESPACE, names::ROOTS_SECRET),
    );
    // Ready (for `/readyz`) once the first list of the MemberClusters is in: the caches are
    // synced, whether or not `federator init` has created the Federation yet.
    let synced = {
        let (members, probes) = (members.clone(), shared.probes.clone());
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            // The store's readiness wakes only the waiter polled last (the reconcile waits on
            // it too), so look again every half second instead of waiting once.
            loop {
                let wait = members.wait_until_ready();
                match tokio::time::timeout(Duration::from_millis(500), wait).await {
                    Ok(Ok(())) => break probes.set_synced(),
                    Ok(Err(_)) => break,
                    Err(_) => {}
                }
            }
        }))
    };
    let feds: Api<Federation> = Api::namespaced(client.clone(), names::NAMESPACE);
    match feds.get_opt(names::FEDERATION).await {
        Ok(None) => warn!("no Federation object: run `federator init`"),
        Ok(Some(_)) => {}
        Err(e) => warn!(error = %e, "cannot read the Federation yet; the watch retries"),
    }
    // The member controllers read their `MemberCluster` from this store too (a second
    // `serve::federation::run` in one process would keep the first store: they are the same
    // watch).
    let _ = shared.member_objects.set(members.clone());
    let ctx = Arc::new(Context {
        roots: RootStore::new(client.clone()),
        shared,
        members,
        foreign,
        signer_version: Mutex::new(String::new()),
        fleet: Fleet::default(),
        failures: Failures::default(),
    });
    Controller::new(feds, plumbing::by_name(names::FEDERATION))
        .reconcile_all_on(member_changes)
        .reconcile_all_on(roots_changes)
        .reconcile_all_on(foreign_changes)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
                warn!(error = %e, "watch on the hub failed; retrying with backoff");
            }
        })
        .await;
    drop(synced);
    Err(Error::Unreachable("the hub watch ended".into()))
}

fn error_policy(_fed: Arc<Federation>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = BACKOFF.delay(ctx.failures.record());
    warn!(%error, retry_in = ?delay, "federation sync failed");
    Action::requeue(delay)
}

impl Context {
    /// The signer, reloaded when the roots Secret or the Federation's spec changed since it
    /// was loaded. It is loaded from the Federation read fresh: the end of a Vault rotation
    /// changes both, and a cached Federation older than the Secret would name the issuer the
    /// rotation left.
    async fn signer(&self, fed: &Federation) -> Result<Arc<Signer>> {
        let version = format!(
            "{}/{}",
            self.roots.version().await?,
            fed.metadata.generation.unwrap_or_default()
        );
        if let Some(signer) = self.shared.signer()
            && *super::lock(&self.signer_version) == version
        {
            return Ok(signer);
        }
        let api: Api<Federation> = Api::namespaced(self.shared.client.clone(), names::NAMESPACE);
        let fresh = api
            .get(names::FEDERATION)
            .await
            .map_err(|e| Error::kube("read the Federation", e))?;
        let signer = Arc::new(self.roots.load(&fresh.spec).await?);
        self.shared.set_signer(signer.clone());
        *super::lock(&self.signer_version) = version;
        Ok(signer)
    }
}

/// Makes the Federation's Vault settings name `issuer` (`None`: the mount's default issuer),
/// at the end of a Vault rotation. Writes only when it differs.
async fn point_at_issuer(
    client: &kube::Client,
    fed: &Federation,
    issuer: Option<&str>,
) -> Result<()> {
    let issuer = issuer.unwrap_or_default();
    if fed
        .spec
        .root
        .vault
        .as_ref()
        .is_none_or(|v| v.issuer == issuer)
    {
        return Ok(());
    }
    let api: Api<Federation> = Api::namespaced(client.clone(), names::NAMESPACE);
    let patch = serde_json::json!({ "spec": { "root": { "vault": { "issuer": issuer } } } });
    api.patch(
        &fed.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::kube("point the Federation at the new Vault issuer", e))?;
    info!(
        issuer,
        "the Federation now names the Vault issuer the rotation moved to"
    );
    Ok(())
}

async fn reconcile(fed: Arc<Federation>, ctx: Arc<Context>) -> Result<Action> {
    ctx.members
        .wait_until_ready()
        .await
        .map_err(|_| Error::Unreachable("the MemberCluster watch stopped".into()))?;
    let members = ctx.members.state();
    ctx.foreign
        .wait_until_ready()
        .await
        .map_err(|_| Error::Unreachable("the ForeignTrustDomain watch stopped".into()))?;
    let foreign = ctx.foreign.state();
    let tds = plan::federation::trust_domains(&members);
    ctx.roots
        .ensure_trust_domains(&tds, &local_root_options(&fed.spec))
        .await?;
    let signer = ctx.signer(&fed).await?;
    let view = signer.view(&tds)?;
    let now = OffsetDateTime::now_utc();
    let plan = plan::federation::plan(&plan::federation::Inputs {
        spec: &fed.spec,
        previous: fed.status.as_ref(),
        generation: fed.metadata.generation,
        members: &members,
        signer: &view,
        foreign: &foreign,
        min_drain: ctx
            .shared
            .opts
            .bundle_endpoint
            .as_ref()
            .map_or(Duration::ZERO, |b| {
                b.refresh_hint.saturating_mul(MIN_DRAIN_REFRESH_HINTS)
            }),
        now,
    })?;
    for (scope, record) in &plan.records {
        match record {
            Record::Resigned { .. } => {
                info!(rotation = %scope, "every member runs on the new root; draining the old one")
            }
            Record::Finished => {
                info!(rotation = %scope, "root rotation done: removing the old root");
                if let Signer::Vault(v, Some(_)) = signer.as_ref() {
                    // The Federation names the issuer the rotation moved to before the rotation
                    // (which names it too) is forgotten: a restart in between still signs there.
                    point_at_issuer(&ctx.shared.client, &fed, v.config().issuer.as_deref()).await?;
                }
            }
        }
        ctx.roots.record(scope, *record).await?;
        match record {
            Record::Resigned { .. } => federator_api::failpoint!("hub.after-record-resigned"),
            Record::Finished => federator_api::failpoint!("hub.after-record-finished"),
        }
    }
    let shared = &ctx.shared;
    if fed.status.as_ref() != Some(&plan.status) {
        let api: Api<Federation> = Api::namespaced(shared.client.clone(), names::NAMESPACE);
        plumbing::apply_status(
            &api,
            &fed.name_any(),
            &plan.status,
            names::HUB_FIELD_MANAGER,
        )
        .await
        .map_err(|e| Error::kube("update the Federation status", e))?;
        federator_api::failpoint!("hub.after-federation-status");
    }
    let metrics = &shared.metrics;
    metrics.set_federation(plan.status.members, plan.status.bundle_generation);
    metrics.set_roots(&plan.status.roots);
    metrics.set_rotations(&plan.status.rotations);
    let reference = fed.object_ref(&());
    for note in &plan.notes {
        shared.events.publish(&reference, note).await;
    }
    let desired = plan.desired;
    shared.desired.send_if_modified(|d| {
        if *d == desired {
            false
        } else {
            *d = desired;
            true
        }
    });
    ctx.fleet.follow(&members, shared);
    ctx.failures.reset();
    Ok(match plan.wake_at {
        Some(at) => Action::requeue(Duration::try_from(at - now).unwrap_or(Duration::ZERO)),
        None => Action::await_change(),
    })
}
