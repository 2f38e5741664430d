//! `federator serve`: the reconciler.
//!
//! * One reflector over the hub's `MemberCluster`s and `Federation`; on every change the
//!   federation is re-synced: roots for every trust domain in use, the bundle and its
//!   generation, and one member task per member.
//! * One member task per member, isolated from the others: a kube-runtime `Controller` on the
//!   member's `ClusterTrust` through the member's own API server, with the stored
//!   least-privilege credential. It signs CSRs under policy, writes the bundle, asks for
//!   renewals when due, and mirrors what the agent reports into the member's status on the
//!   hub. A broken member only ever stalls its own task; the watcher reconnects with backoff.
//! * Every write is preceded by a comparison: at steady state nothing is written.
//! * With `--leader-elect`, only the holder of the `federator-leader` Lease runs any of this;
//!   a replica that loses the Lease exits, so its supervisor restarts it as a follower.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use federator_api::hub::{
    Federation, FederationStatus, MemberCluster, MemberClusterSpec, RootStatus, RotationStatus,
};
use federator_api::member::{BundleEntry, ClusterTrust, CsrStatus, SignedCa};
use federator_api::{condition, names};
use federator_core::csr::CsrInfo;
use federator_core::identity::{ClusterName, TrustDomain};
use federator_core::policy::{ClusterCaRequest, SigningPolicy};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::kube as k;
use super::member_access;
use super::metrics::{Metrics, serve_metrics};
use super::plan::{self, Desired, StatusInputs};
use super::roots::{RootStore, Signer};
use crate::{Error, Result};

/// `serve` options.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Run only while holding the leader Lease.
    pub leader_elect: bool,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Refresh a member's `lastContact` at least this often.
    pub heartbeat: Duration,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Runs until SIGINT/SIGTERM (or, with leader election, until leadership is lost).
pub async fn serve(hub: Client, opts: ServeOptions) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let _metrics_task = match opts.metrics_addr {
        Some(addr) => {
            // Bind now, so a bad address fails at start rather than silently.
            let listener_check = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Usage(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
            drop(listener_check);
            Some(AbortOnDrop(tokio::spawn(serve_metrics(
                addr,
                metrics.clone(),
            ))))
        }
        None => None,
    };
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    if !opts.leader_elect {
        metrics.set_leader(true);
        tokio::select! {
            r = run(hub, opts, metrics) => return r,
            () = shutdown => return Ok(()),
        }
    }
    let manager = kube_lease_manager::LeaseManagerBuilder::new(hub.clone(), names::LEADER_LEASE)
        .with_namespace(names::NAMESPACE)
        .with_identity(opts.identity.clone())
        .with_duration(15)
        .with_grace(5)
        .with_field_manager(names::HUB_FIELD_MANAGER)
        .build()
        .await
        .map_err(|e| Error::Unreachable(format!("leader election: {e}")))?;
    let (mut leader, lease_task) = manager.watch().await;
    tokio::pin!(shutdown);
    info!(identity = %opts.identity, "waiting for leadership");
    while !*leader.borrow_and_update() {
        tokio::select! {
            r = leader.changed() => r.map_err(|_| Error::Unreachable("leader election stopped".into()))?,
            () = &mut shutdown => return Ok(()),
        }
    }
    info!(identity = %opts.identity, "became the leader");
    metrics.set_leader(true);
    let lost = async {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                return;
            }
        }
    };
    let result = tokio::select! {
        r = run(hub, opts, metrics) => r,
        () = lost => Err(Error::Unreachable("lost leadership; exiting so that the new leader alone acts".into())),
        () = &mut shutdown => Ok(()),
    };
    // Dropping the receiver makes the lease task release the Lease.
    lease_task.abort();
    result
}

/// Shared state of the hub process.
struct Hub {
    client: Client,
    opts: ServeOptions,
    roots: RootStore,
    /// Loaded at the first sync (it needs the Federation's settings), with the roots Secret's
    /// resourceVersion it was loaded from.
    signer: Mutex<Option<(String, Arc<Signer>)>>,
    desired: watch::Sender<Desired>,
    policy: Mutex<SigningPolicy>,
    metrics: Arc<Metrics>,
}

struct MemberTask {
    spec: MemberClusterSpec,
    handle: JoinHandle<()>,
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(client: Client, opts: ServeOptions, metrics: Arc<Metrics>) -> Result<()> {
    let roots = RootStore::new(client.clone());
    let hub = Arc::new(Hub {
        client: client.clone(),
        opts,
        roots,
        signer: Mutex::new(None),
        desired: watch::Sender::new(Desired::default()),
        policy: Mutex::new(SigningPolicy::default()),
        metrics,
    });
    let members_api: Api<MemberCluster> = Api::namespaced(client.clone(), names::NAMESPACE);
    let feds_api: Api<Federation> = Api::namespaced(client.clone(), names::NAMESPACE);
    let (members, members_writer) = reflector::store();
    let (feds, feds_writer) = reflector::store();
    // Each event says which watch it came from and whether that watch finished its initial list.
    let member_events = reflector(
        members_writer,
        watcher(members_api, watcher::Config::default()),
    )
    .default_backoff()
    .map(|e| {
        e.map(|ev| (0usize, matches!(ev, watcher::Event::InitDone)))
            .map_err(|e| e.to_string())
    });
    let fed_events = reflector(
        feds_writer,
        watcher(
            feds_api,
            watcher::Config::default().fields(&format!("metadata.name={}", names::FEDERATION)),
        ),
    )
    .default_backoff()
    .map(|e| {
        e.map(|ev| (1usize, matches!(ev, watcher::Event::InitDone)))
            .map_err(|e| e.to_string())
    });
    // The roots Secret: a rotation started from the CLI changes only this.
    let roots_api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), names::NAMESPACE);
    let root_events = watcher(
        roots_api,
        watcher::Config::default().fields(&format!("metadata.name={}", names::ROOTS_SECRET)),
    )
    .default_backoff()
    .map(|e| e.map(|_| (0usize, false)).map_err(|e| e.to_string()));
    let mut events = std::pin::pin!(futures::stream::select(
        futures::stream::select(member_events, fed_events),
        root_events
    ));
    let mut ready = [false, false];
    let mut tasks: BTreeMap<String, MemberTask> = BTreeMap::new();
    info!("federator serve started");
    // A failed sync (say, Vault unreachable) is retried with backoff even if nothing changes.
    let mut retry_in: Option<Duration> = None;
    // A sync may also ask to run again at a time (a rotation's drain deadline).
    let mut wake_at: Option<OffsetDateTime> = None;
    loop {
        let until_wake = wake_at
            .map(|t| Duration::try_from(t - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO));
        let delay = match (retry_in, until_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let event = match delay {
            Some(delay) => tokio::select! {
                e = events.next() => e,
                () = tokio::time::sleep(delay) => Some(Ok((0, false))),
            },
            None => events.next().await,
        };
        let Some(event) = event else { break };
        match event {
            Err(e) => {
                warn!(error = %e, "watch on the hub failed; retrying with backoff");
                continue;
            }
            Ok((source, init_done)) => ready[source] |= init_done,
        }
        if !ready.iter().all(|r| *r) {
            continue;
        }
        let Some(fed) = feds
            .state()
            .into_iter()
            .find(|f| f.name_any() == names::FEDERATION)
        else {
            warn!("no Federation object: run `federator init`");
            continue;
        };
        let members_now: Vec<Arc<MemberCluster>> = members.state();
        match sync(&hub, &fed, &members_now).await {
            Ok(wake) => {
                retry_in = None;
                wake_at = wake;
            }
            Err(e) => {
                let delay = retry_in.map_or(Duration::from_secs(1), |d| {
                    (d * 2).min(Duration::from_secs(60))
                });
                warn!(error = %e, retry_in = ?delay, "federation sync failed");
                retry_in = Some(delay);
                continue;
            }
        }
        // Member tasks follow membership: spawn new, restart changed, stop removed.
        let wanted: BTreeMap<String, MemberClusterSpec> = members_now
            .iter()
            .map(|m| (m.name_any(), m.spec.clone()))
            .collect();
        hub.metrics
            .retain_members(&members_now.iter().map(|m| m.name_any()).collect::<Vec<_>>());
        tasks.retain(|name, task| {
            let keep = wanted.get(name) == Some(&task.spec);
            if !keep {
                info!(cluster = %name, "stopping member task");
                task.handle.abort();
            }
            keep
        });
        for (name, spec) in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = tasks.entry(name.clone()) {
                info!(cluster = %name, "starting member task");
                let handle = tokio::spawn(run_member(hub.clone(), name, spec.clone()));
                slot.insert(MemberTask { spec, handle });
            }
        }
    }
    Err(Error::Unreachable("the hub watch ended".into()))
}

/// Moves every root rotation forward as far as the members' state allows:
/// trusting-new-root (until every member installed the bundle with both roots) → re-signing
/// (members of the trust domain are renewed under the new root) → draining (old workload
/// certificates expire) → the old root is dropped. Returns the status, the trust domains to
/// re-sign, and when to look again.
async fn advance_rotations(
    hub: &Hub,
    signer: &Signer,
    members: &[Arc<MemberCluster>],
    generation: i64,
) -> Result<(
    Vec<RotationStatus>,
    std::collections::BTreeSet<String>,
    Option<OffsetDateTime>,
)> {
    use time::format_description::well_known::Rfc3339;
    let now = OffsetDateTime::now_utc();
    let mut statuses = Vec::new();
    let mut resign = std::collections::BTreeSet::new();
    let mut wake_at: Option<OffsetDateTime> = None;
    // Members that do not trust the current bundle yet (cacerts, and istiod publishing it).
    let not_trusting: Vec<String> = members
        .iter()
        .filter(|m| {
            !m.status
                .as_ref()
                .is_some_and(|s| s.bundle_generation_acknowledged >= generation)
        })
        .map(|m| {
            let s = m.status.clone().unwrap_or_default();
            let why = s
                .conditions
                .iter()
                .find(|c| c.type_ == "BundleAcknowledged" && !c.message.is_empty())
                .map(|c| c.message.clone())
                .unwrap_or_else(|| {
                    format!(
                        "trusts bundle generation {} of {generation}",
                        s.bundle_generation_acknowledged
                    )
                });
            format!("{}: {why}", m.name_any())
        })
        .collect();
    let all_trust_new = not_trusting.is_empty();
    for (td, previous, rotation) in signer.rotations() {
        let sha256 = federator_core::cert::fingerprint(signer.root_der_for(&td)?);
        let drain =
            time::Duration::seconds(i64::try_from(rotation.drain_seconds).unwrap_or(i64::MAX));
        let mut removes_old_root_at = String::new();
        let mut waiting_for = Vec::new();
        let phase = match rotation
            .resigned_at
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        {
            Some(resigned) if now >= resigned + drain => {
                info!(trust_domain = %td, "root rotation done: removing the old root");
                hub.roots.finish_rotation(&td).await?;
                continue;
            }
            Some(resigned) => {
                removes_old_root_at = federator_core::cert::rfc3339(resigned + drain);
                wake_at = Some(wake_at.map_or(resigned + drain, |w| w.min(resigned + drain)));
                "draining"
            }
            None if !all_trust_new => {
                waiting_for.clone_from(&not_trusting);
                "trusting-new-root"
            }
            None => {
                resign.insert(td.to_string());
                waiting_for = members
                    .iter()
                    .filter(|m| m.spec.trust_domain == td.as_str())
                    .filter(|m| {
                        !m.status.as_ref().is_some_and(|s| {
                            s.ca_root_sha256 == sha256
                                && condition::is_true(&s.conditions, "Installed")
                        })
                    })
                    .map(|m| {
                        format!(
                            "{}: its cluster CA is not under the new root yet",
                            m.name_any()
                        )
                    })
                    .collect();
                if waiting_for.is_empty() {
                    info!(trust_domain = %td, "every member runs on the new root; draining the old one");
                    hub.roots.mark_resigned(&td, now).await?;
                    removes_old_root_at = federator_core::cert::rfc3339(now + drain);
                    wake_at = Some(wake_at.map_or(now + drain, |w| w.min(now + drain)));
                    "draining"
                } else {
                    "re-signing"
                }
            }
        };
        statuses.push(RotationStatus {
            trust_domain: td.to_string(),
            phase: phase.to_owned(),
            previous_sha256: federator_core::cert::fingerprint(&previous),
            sha256,
            removes_old_root_at,
            waiting_for,
        });
    }
    Ok((statuses, resign, wake_at))
}

/// Re-derives the federation's desired state from its members. Returns when to sync again
/// even if nothing changes (a rotation's drain deadline).
async fn sync(
    hub: &Arc<Hub>,
    fed: &Federation,
    members: &[Arc<MemberCluster>],
) -> Result<Option<OffsetDateTime>> {
    let mut tds: Vec<TrustDomain> = members
        .iter()
        .filter_map(|m| TrustDomain::new(&m.spec.trust_domain).ok())
        .collect();
    tds.sort();
    tds.dedup();
    let created = hub
        .roots
        .ensure_trust_domains(&tds, &super::roots::local_root_options(&fed.spec)?)
        .await?;
    let version = hub.roots.version().await?;
    let current = lock(&hub.signer).clone();
    let signer = match current {
        Some((v, signer)) if v == version && created.is_empty() => signer,
        _ => {
            let signer = Arc::new(hub.roots.load(&fed.spec).await?);
            *lock(&hub.signer) = Some((version, signer.clone()));
            signer
        }
    };
    let bundle = signer.bundle_for(tds.iter())?;
    let digest = bundle.digest();
    let previous = fed.status.clone().unwrap_or_default();
    let generation = if previous.bundle_digest == digest {
        previous.bundle_generation.max(1)
    } else {
        previous.bundle_generation + 1
    };
    let (rotations, resign, wake_at) = advance_rotations(hub, &signer, members, generation).await?;
    let ttl = federator_core::duration::parse(&fed.spec.cluster_ca_ttl)?;
    *lock(&hub.policy) = SigningPolicy { ttl };

    let roots: Vec<RootStatus> = tds
        .iter()
        .filter_map(|td| {
            let der = signer.root_der_for(td).ok()?.to_vec();
            let info = federator_core::cert::CertInfo::from_der(&der).ok()?;
            Some(RootStatus {
                trust_domain: td.to_string(),
                sha256: info.sha256,
                subject: info.subject,
                not_after: info.not_after,
            })
        })
        .collect();
    let now = federator_core::cert::rfc3339(OffsetDateTime::now_utc());
    let status = FederationStatus {
        conditions: condition::set(&previous.conditions, "Ready", true, "Synced", "", &now),
        roots,
        bundle_digest: digest,
        bundle_generation: generation,
        members: i64::try_from(members.len()).unwrap_or(i64::MAX),
        rotations,
    };
    hub.metrics
        .set_federation(status.members, status.bundle_generation);
    if status != previous {
        let api: Api<Federation> = Api::namespaced(hub.client.clone(), names::NAMESPACE);
        let patch = serde_json::json!({ "apiVersion": "federator.io/v1alpha1", "kind": "Federation", "status": status });
        api.patch_status(
            names::FEDERATION,
            &PatchParams::apply(names::HUB_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::kube("update the Federation status", e))?;
    }
    let desired = Desired {
        bundle: bundle
            .trust_domains()
            .map(|td| BundleEntry {
                trust_domain: td.to_string(),
                roots_pem: bundle.domain_pem(td),
            })
            .collect(),
        bundle_generation: generation,
        key_algorithm: fed.spec.key_algorithm.clone(),
        renew_at_percent: fed.spec.renew_at_percent,
        signing_roots: tds
            .iter()
            .filter_map(|td| {
                let fp = federator_core::cert::fingerprint(signer.root_der_for(td).ok()?);
                Some((td.to_string(), fp))
            })
            .collect(),
        resign,
    };
    hub.desired.send_if_modified(|d| {
        if *d == desired {
            false
        } else {
            *d = desired;
            true
        }
    });
    Ok(wake_at)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked while holding it; the data is still
    // the last value written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Per-member context for the member controller.
struct MemberCtx {
    hub: Arc<Hub>,
    name: String,
    spec: MemberClusterSpec,
    member: Client,
    /// The last `ClusterTrust` seen, for status while unreachable.
    last_seen: Mutex<Option<ClusterTrust>>,
    /// Notified when the member rejects the credential (401) or it was renewed: the task then
    /// reloads it.
    rejected: Arc<tokio::sync::Notify>,
    /// The credential in use.
    credential: member_access::StoredCredential,
    /// Consecutive failed reconciles, for the retry backoff.
    failures: std::sync::atomic::AtomicU32,
}

/// Runs one member's controller, reconnecting when the credential cannot be loaded.
async fn run_member(hub: Arc<Hub>, name: String, spec: MemberClusterSpec) {
    let mut delay = Duration::from_secs(1);
    loop {
        match member_client(&hub, &spec).await {
            Ok((member, credential)) => {
                delay = Duration::from_secs(1);
                let ctx = Arc::new(MemberCtx {
                    hub: hub.clone(),
                    name: name.clone(),
                    spec: spec.clone(),
                    member: member.clone(),
                    last_seen: Mutex::new(None),
                    rejected: Arc::new(tokio::sync::Notify::new()),
                    credential,
                    failures: std::sync::atomic::AtomicU32::new(0),
                });
                run_member_controller(ctx).await;
            }
            Err(e) => {
                warn!(cluster = %name, error = %e, "cannot load the member credential");
                let _ = report_status(
                    &hub,
                    &name,
                    None,
                    false,
                    &[format!("cannot use the stored credential: {e}")],
                )
                .await;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

async fn member_client(
    hub: &Hub,
    spec: &MemberClusterSpec,
) -> Result<(Client, member_access::StoredCredential)> {
    let stored = member_access::stored_kubeconfig(&hub.client, &spec.credential_secret)
        .await?
        .ok_or_else(|| {
            Error::Refused(format!(
                "credential Secret {} is missing; run `federator join` again",
                spec.credential_secret
            ))
        })?;
    let client = k::client_from_kubeconfig_yaml(&stored.kubeconfig, &spec.credential_secret)
        .await?
        .0;
    Ok((client, stored))
}

/// Replaces the hub's token for a member before it expires, using the token itself (the hub's
/// Role allows it to request tokens for its own ServiceAccount only).
async fn renew_credential(ctx: &MemberCtx, stored: &member_access::StoredCredential) -> Result<()> {
    let (token, expires) =
        member_access::request_token(&ctx.member, names::HUB_SERVICE_ACCOUNT, stored.lifetime())
            .await?;
    let yaml = stored.with_token(&token)?;
    member_access::store_kubeconfig(
        &ctx.hub.client,
        &ctx.spec.credential_secret,
        &ctx.name,
        &yaml,
        expires,
    )
    .await?;
    info!(cluster = %ctx.name, expires = %federator_core::cert::rfc3339(expires), "renewed the hub's token");
    Ok(())
}

async fn run_member_controller(ctx: Arc<MemberCtx>) {
    let api: Api<ClusterTrust> = Api::namespaced(ctx.member.clone(), names::NAMESPACE);
    let desired_changes =
        futures::stream::unfold(ctx.hub.desired.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        });
    // A rejected credential (401) ends this controller, so the member task reloads the stored
    // credential: `federator join` may have replaced it.
    let rejected = ctx.rejected.clone();
    let error_ctx = ctx.clone();
    let error_rejected = rejected.clone();
    let controller = Controller::new(
        api,
        watcher::Config::default().fields(&format!("metadata.name={}", names::CLUSTER_TRUST)),
    )
    .reconcile_all_on(desired_changes)
    .run(reconcile_member, error_policy, ctx.clone())
    .for_each(move |result| {
        let ctx = error_ctx.clone();
        let rejected = error_rejected.clone();
        async move {
            if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
                let unauthorized = is_unauthorized(&e);
                member_unreachable(
                    &ctx,
                    unauthorized,
                    &format!("cannot watch the cluster: {e}"),
                )
                .await;
                if unauthorized {
                    rejected.notify_one();
                }
            }
        }
    });
    tokio::select! {
        () = controller => {}
        () = rejected.notified() => info!(cluster = %ctx.name, "credential rejected; reloading it"),
    }
}

/// Records that a member could not be reached (or rejected the credential) in its status.
async fn member_unreachable(ctx: &MemberCtx, unauthorized: bool, detail: &str) {
    let message = if unauthorized {
        format!(
            "the hub's credential was rejected (401: revoked or expired); run `federator join cluster {}` again to issue a new one",
            ctx.name
        )
    } else {
        detail.to_owned()
    };
    warn!(cluster = %ctx.name, error = %detail, "member unreachable");
    let last = lock(&ctx.last_seen).clone();
    let _ = report_status(&ctx.hub, &ctx.name, last.as_ref(), false, &[message]).await;
}

fn is_unauthorized(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 401,
        watcher::Error::WatchError(s) => s.code == 401,
        _ => false,
    }
}

fn error_policy(_ct: Arc<ClusterTrust>, err: &Error, ctx: Arc<MemberCtx>) -> Action {
    let failures = ctx
        .failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let delay = Duration::from_secs(1 << failures.min(6)).min(Duration::from_secs(60));
    warn!(cluster = %ctx.name, error = %err, retry_in = ?delay, "member reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_member(cached: Arc<ClusterTrust>, ctx: Arc<MemberCtx>) -> Result<Action> {
    // Read the object fresh: this is the authenticated contact that proves the credential
    // still works (a watch opened earlier survives a revocation), and it avoids acting on a
    // stale cache.
    let api: Api<ClusterTrust> = Api::namespaced(ctx.member.clone(), names::NAMESPACE);
    let ct = match api.get_opt(names::CLUSTER_TRUST).await {
        Ok(Some(ct)) => Arc::new(ct),
        Ok(None) => return Ok(Action::await_change()),
        Err(e) => {
            let unauthorized = matches!(&e, kube::Error::Api(s) if s.code == 401);
            member_unreachable(
                &ctx,
                unauthorized,
                &format!("cannot read ClusterTrust: {e}"),
            )
            .await;
            if unauthorized {
                ctx.rejected.notify_one();
            }
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    drop(cached);
    *lock(&ctx.last_seen) = Some((*ct).clone());
    let desired = ctx.hub.desired.borrow().clone();
    if desired.bundle_generation == 0 {
        // The federation has not been synced yet; the sync will trigger us.
        return Ok(Action::await_change());
    }
    let now = OffsetDateTime::now_utc();
    let plan = plan::plan_member(&ct, &ctx.name, &ctx.spec.trust_domain, &desired, now);
    let mut spec = plan.spec;
    let mut problems = Vec::new();
    if let Some(csr) = &plan.sign {
        match sign(&ctx, csr, &desired, now).await {
            Ok(signed) => {
                info!(cluster = %ctx.name, generation = csr.generation, serial = %signed.serial, "signed a cluster CA");
                ctx.hub.metrics.signed(&ctx.name);
                spec.signed = Some(signed);
            }
            // Vault being unreachable, sealed, or denying (a policy can be fixed) is worth retrying.
            Err(e @ (Error::Vault { .. } | Error::Unreachable(_))) => {
                // Worth retrying: report it, keep everything as it is, and come back with backoff.
                warn!(cluster = %ctx.name, error = %e, "signing failed; will retry");
                ctx.hub.metrics.sign_failed(&ctx.name);
                let problem = format!("CSR generation {} not signed yet: {e}", csr.generation);
                report_status(&ctx.hub, &ctx.name, Some(&ct), true, &[problem]).await?;
                return Err(e);
            }
            Err(e) => {
                warn!(cluster = %ctx.name, error = %e, "refused to sign");
                ctx.hub.metrics.sign_failed(&ctx.name);
                problems.push(format!("CSR generation {} not signed: {e}", csr.generation));
            }
        }
    }
    let mut current = (*ct).clone();
    if spec != ct.spec {
        let patch = serde_json::json!({
            "apiVersion": "federator.io/v1alpha1",
            "kind": "ClusterTrust",
            "metadata": { "name": names::CLUSTER_TRUST },
            "spec": spec,
        });
        current = api
            .patch(
                names::CLUSTER_TRUST,
                &PatchParams::apply(names::HUB_FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::kube(&format!("write the ClusterTrust spec of {}", ctx.name), e))?;
    }
    // The stored credential, read fresh: renew it when due; reload it when it changed (a
    // re-join or another replica's renewal).
    match member_access::stored_kubeconfig(&ctx.hub.client, &ctx.spec.credential_secret).await? {
        Some(stored) if stored.needs_renewal(now) => match renew_credential(&ctx, &stored).await {
            Ok(()) => ctx.rejected.notify_one(),
            Err(e) => problems.push(format!("cannot renew the hub's token: {e}")),
        },
        Some(stored) if stored.kubeconfig != ctx.credential.kubeconfig => ctx.rejected.notify_one(),
        _ => {}
    }
    report_status(&ctx.hub, &ctx.name, Some(&current), true, &problems).await?;
    ctx.failures.store(0, std::sync::atomic::Ordering::Relaxed);
    let heartbeat = ctx.hub.opts.heartbeat;
    let wait = plan
        .wake_at
        .map(|t| Duration::try_from(t - now).unwrap_or(Duration::ZERO) + Duration::from_millis(50))
        .map_or(heartbeat, |d| d.min(heartbeat));
    Ok(Action::requeue(wait))
}

async fn sign(
    ctx: &MemberCtx,
    csr: &CsrStatus,
    desired: &Desired,
    now: OffsetDateTime,
) -> Result<SignedCa> {
    let info = CsrInfo::parse(csr.pem.as_bytes())?;
    if info.digest() != csr.digest {
        return Err(Error::Refused(
            "the CSR's digest does not match the CSR".into(),
        ));
    }
    let request = ClusterCaRequest {
        cluster: ClusterName::new(&ctx.name)?,
        trust_domain: TrustDomain::new(&ctx.spec.trust_domain)?,
    };
    let policy = lock(&ctx.hub.policy).clone();
    let (_, signer) = lock(&ctx.hub.signer)
        .clone()
        .ok_or_else(|| Error::Refused("the signer is not loaded yet".into()))?;
    let issued = signer.sign(&policy, &info, &request).await?;
    let not_after = OffsetDateTime::parse(
        &issued.info.not_after,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(SignedCa {
        csr_digest: csr.digest.clone(),
        generation: csr.generation,
        chain_pem: issued.chain_pem,
        serial: issued.info.serial,
        not_after: issued.info.not_after,
        renew_after: federator_core::cert::rfc3339(plan::renew_after(
            now,
            not_after,
            desired.renew_at_percent,
        )),
    })
}

/// Mirrors what is known about a member into its status on the hub, writing only on change.
async fn report_status(
    hub: &Hub,
    name: &str,
    ct: Option<&ClusterTrust>,
    reachable: bool,
    problems: &[String],
) -> Result<()> {
    let api: Api<MemberCluster> = Api::namespaced(hub.client.clone(), names::NAMESPACE);
    let Some(current) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("read MemberCluster", e))?
    else {
        return Ok(());
    };
    let status = plan::member_status(
        current.status.as_ref(),
        &StatusInputs {
            ct,
            reachable,
            hub_problems: problems,
            bundle_generation: hub.desired.borrow().bundle_generation,
            now: OffsetDateTime::now_utc(),
            heartbeat: hub.opts.heartbeat,
        },
    );
    let ca_expiry = OffsetDateTime::parse(
        &status.ca_not_after,
        &time::format_description::well_known::Rfc3339,
    )
    .map(OffsetDateTime::unix_timestamp)
    .unwrap_or(0);
    hub.metrics.set_member(
        name,
        condition::is_true(&status.conditions, "Ready"),
        ca_expiry,
        status.bundle_generation_acknowledged,
    );
    if current.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({ "apiVersion": "federator.io/v1alpha1", "kind": "MemberCluster", "status": status });
        api.patch_status(
            name,
            &PatchParams::apply(names::HUB_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::kube("update a MemberCluster status", e))?;
    }
    Ok(())
}
