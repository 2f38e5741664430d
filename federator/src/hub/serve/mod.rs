//! `federator serve`: the hub as controllers.
//!
//! * [`federation`]: one kube-runtime `Controller` on the `Federation` object, with the
//!   `MemberCluster`s and the roots Secret mapped onto it. Each reconcile makes sure every
//!   trust domain in use has a root, moves root rotations forward, writes the Federation
//!   status, publishes what every member must be told, and starts or stops member
//!   controllers ([`fleet`]).
//! * [`member`]: one controller per member, isolated from the others, on the member's
//!   `ClusterTrust` through the member's own API server and the stored least-privilege
//!   credential. It signs CSRs, writes the bundle, asks for renewals when due, renews its
//!   credential, and mirrors what the agent reports into the member's status on the hub.
//! * Decisions are the pure functions of [`super::plan`]; every write follows a comparison, so
//!   at steady state nothing is written.
//! * This module: signals, the `--metrics-addr` server ([`metrics`], [`probes`]) and, with
//!   `--leader-elect`, the `federator-leader` Lease: only its holder runs the controllers; a
//!   replica that loses it exits, so its supervisor restarts it as a follower. On SIGTERM the
//!   leader stops its controllers and releases the Lease, and a standby that sees it released
//!   takes it at once (not after the lease duration); the process exits 0.
//! * [`secrets`]: the hub's managed Secrets (stored credentials, reader kubeconfigs) in a
//!   watch-fed store the member controllers read.
//! * [`bundle_endpoint`]: with `--bundle-endpoint-addr`, every replica serves the
//!   federation's SPIFFE bundles, leader or not; with `https_spiffe` the leader keeps the
//!   endpoint's X509-SVID ([`endpoint_svid`]).

pub mod bundle_endpoint;
pub mod endpoint_svid;
pub mod federation;
pub mod fleet;
pub mod foreign;
pub mod member;
pub mod metrics;
pub mod probes;
pub mod secrets;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use federator_api::events::Events;
use federator_api::hub::MemberCluster;
use federator_api::names;
use federator_api::plumbing::Backoff;
use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use self::metrics::Metrics;
use self::probes::{HubEndpoints, Probes};
use super::plan::federation::Desired;
use super::trust::signer::Signer;
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
    /// Lifetime of the members' reader tokens (remote secrets).
    pub reader_token_ttl: Duration,
    /// Renew a reader token once it is this old, if that is before two thirds of its lifetime.
    pub reader_token_renew_after: Option<Duration>,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the federation's SPIFFE bundles.
    pub bundle_endpoint: Option<bundle_endpoint::BundleEndpointOptions>,
}

/// The retry backoff of every hub controller and task.
pub const BACKOFF: Backoff = Backoff {
    start: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

/// What the federation controller shares with every member controller.
pub struct Shared {
    /// The hub cluster.
    pub client: Client,
    /// `serve`'s options.
    pub opts: ServeOptions,
    /// What every member must be told; member controllers reconcile when it changes.
    pub desired: watch::Sender<Desired>,
    /// Bumped whenever a member's reader kubeconfig changes, so that every member controller
    /// hands its agent the new set of peers.
    pub readers: watch::Sender<u64>,
    /// The current members (the `MemberCluster`s the fleet follows): only their readers are
    /// handed out as peers.
    pub members: Mutex<std::collections::BTreeSet<String>>,
    /// Each member's signing budget ([`crate::hub::plan::sign_budget`]), kept across its
    /// controller's restarts.
    pub sign_budgets:
        Mutex<std::collections::BTreeMap<String, crate::hub::plan::sign_budget::Budget>>,
    /// The federation controller's store of the `MemberCluster`s (set once it runs): the
    /// member controllers read their object from it instead of the hub's API.
    pub member_objects: std::sync::OnceLock<kube::runtime::reflector::Store<MemberCluster>>,
    /// Per member, the `MemberCluster` its last status write returned and the
    /// resourceVersion that write replaced: while the store still shows that version, the
    /// write's result is the current object.
    pub status_written: Mutex<StatusWrites>,
    /// The hub's managed Secrets ([`secrets`]; set once the first list is in).
    pub managed_secrets:
        std::sync::OnceLock<kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Secret>>,
    /// The signer, loaded by the federation controller.
    signer: Mutex<Option<Arc<Signer>>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The readiness the controllers report.
    pub probes: Arc<Probes>,
    /// Events on hub objects.
    pub events: Events,
}

/// Per member, the `MemberCluster` its last status write returned, and the resourceVersion
/// that write replaced.
pub type StatusWrites = std::collections::BTreeMap<String, (Option<String>, Arc<MemberCluster>)>;

impl Shared {
    /// The shared state of a hub process.
    pub fn new(
        client: Client,
        opts: ServeOptions,
        metrics: Arc<Metrics>,
        probes: Arc<Probes>,
    ) -> Self {
        let events = Events::new(
            client.clone(),
            names::HUB_FIELD_MANAGER,
            Some(opts.identity.clone()),
        );
        Self {
            client,
            opts,
            desired: watch::Sender::new(Desired::default()),
            readers: watch::Sender::new(0),
            members: Mutex::default(),
            sign_budgets: Mutex::default(),
            member_objects: std::sync::OnceLock::new(),
            status_written: Mutex::default(),
            managed_secrets: std::sync::OnceLock::new(),
            signer: Mutex::new(None),
            metrics,
            probes,
            events,
        }
    }

    /// The signer, once the federation controller loaded it.
    pub fn signer(&self) -> Option<Arc<Signer>> {
        lock(&self.signer).clone()
    }

    fn set_signer(&self, signer: Arc<Signer>) {
        *lock(&self.signer) = Some(signer);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked while holding it; the data is still
    // the last value written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
}

/// Runs until SIGINT/SIGTERM (or, with leader election, until leadership is lost).
pub async fn serve(hub: Client, opts: ServeOptions) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let probes = Arc::new(Probes::new(opts.leader_elect));
    let _server = match opts.metrics_addr {
        Some(addr) => {
            let endpoints = Arc::new(HubEndpoints {
                metrics: metrics.clone(),
                probes: probes.clone(),
            });
            Some(
                federator_api::serving::serve(addr, endpoints)
                    .await
                    .map_err(|e| {
                        Error::Usage(format!("--metrics-addr {addr}: cannot listen: {e}"))
                    })?
                    .1,
            )
        }
        None => None,
    };
    let _bundle_endpoint = match &opts.bundle_endpoint {
        Some(o) => Some(bundle_endpoint::start(hub.clone(), o).await?),
        None => None,
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let result = if opts.leader_elect {
        elected(hub, opts, metrics, probes.clone(), &mut shutdown).await
    } else {
        metrics.set_leader(true);
        probes.set_leader(true);
        tokio::select! {
            r = run(hub, opts, metrics, probes.clone()) => r,
            () = &mut shutdown => {
                info!("shutting down");
                probes.set_stopping();
                Ok(())
            }
        }
    };
    if let Err(e) = &result {
        probes.set_failed(&e.to_string());
    }
    result
}

/// How long a replica that stops waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the controllers while holding the `federator-leader` Lease.
///
/// A standby keeps a [`kube_lease_manager`] task that takes the Lease when it is free or
/// expired. That task only looks again when the lease it saw expires, so a standby also
/// watches the Lease: when its holder is cleared (a leader that stopped released it), the
/// standby starts a fresh lease task at once, which finds the Lease free and takes it,
/// instead of waiting out the lease duration. On SIGTERM the leader stops its controllers,
/// then closes the lease task's channel and waits for it: the task releases the Lease
/// (clears its holder) before it ends.
async fn elected(
    hub: Client,
    opts: ServeOptions,
    metrics: Arc<Metrics>,
    probes: Arc<Probes>,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<()> {
    let holder = lease_holder(hub.clone(), probes.clone());
    let mut holders = holder.subscribe();
    info!(identity = %opts.identity, "waiting for leadership");
    let (mut leader, lease_task) = loop {
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(hub.clone(), names::LEADER_LEASE)
                .with_namespace(names::NAMESPACE)
                .with_identity(opts.identity.clone())
                .with_duration(LEASE_DURATION_SECONDS)
                .with_grace(5)
                // One field manager per replica: the lock is a server-side apply of
                // `holderIdentity`, and only another manager's apply conflicts. Under one
                // shared name two replicas that both found the Lease free would both "win".
                .with_field_manager(lease_field_manager(&opts.identity))
                .build()
                .await
                .map_err(|e| Error::Unreachable(format!("leader election: {e}")))?;
        let (mut leader, lease_task) = manager.watch().await;
        // The holder when this lease task started: a release is a change from a holder to none.
        let mut seen = holders.borrow_and_update().clone().flatten();
        let retry = loop {
            if *leader.borrow_and_update() {
                break false;
            }
            tokio::select! {
                r = leader.changed() => r.map_err(|_| Error::Unreachable("leader election stopped".into()))?,
                r = holders.changed() => {
                    r.map_err(|_| Error::Unreachable("the Lease watch stopped".into()))?;
                    let now = holders.borrow_and_update().clone().flatten();
                    let released = seen.is_some() && now.is_none();
                    seen = now;
                    if released {
                        info!("the leader released the Lease; taking it");
                        break true;
                    }
                }
                () = &mut *shutdown => {
                    info!("shutting down");
                    probes.set_stopping();
                    stop_lease_task(leader, lease_task).await;
                    return Ok(());
                }
            }
        };
        if !retry {
            break (leader, lease_task);
        }
        stop_lease_task(leader, lease_task).await;
    };
    drop(holder);
    info!(identity = %opts.identity, "became the leader");
    metrics.set_leader(true);
    probes.set_leader(true);
    let lost = async {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                return;
            }
        }
    };
    let result = tokio::select! {
        r = run(hub, opts, metrics.clone(), probes.clone()) => r,
        () = lost => Err(Error::Unreachable("lost leadership; exiting so that the new leader alone acts".into())),
        () = &mut *shutdown => {
            info!("shutting down: stopping the controllers and releasing the Lease");
            probes.set_stopping();
            Ok(())
        }
    };
    // The controllers stopped with `run` above; now the Lease goes.
    metrics.set_leader(false);
    stop_lease_task(leader, lease_task).await;
    result
}

/// The field manager of a replica's writes to the Lease.
fn lease_field_manager(identity: &str) -> String {
    // Field managers are at most 128 characters.
    format!("{}-{identity}", names::HUB_FIELD_MANAGER)
        .chars()
        .take(128)
        .collect()
}

/// The lease duration: how long a Lease whose holder vanished without releasing it stays
/// taken.
pub const LEASE_DURATION_SECONDS: u64 = 15;

/// Closes the lease task's channel, which makes it release the Lease if it holds it, and
/// waits (a bounded time) for it to finish.
async fn stop_lease_task(
    leader: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) {
    drop(leader);
    match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
        Ok(Ok(Ok(_))) => info!("released the Lease"),
        Ok(Ok(Err(e))) => warn!(error = %e, "could not release the Lease; it expires by itself"),
        Ok(Err(e)) => warn!(error = %e, "the lease task failed"),
        Err(_) => {
            warn!("the Lease was not released within {RELEASE_TIMEOUT:?}; it expires by itself")
        }
    }
}

/// Watches the `federator-leader` Lease: the value is `None` until it has been read, then its
/// holder (`Some(None)`: nobody, or no Lease). The first read marks the probes.
fn lease_holder(hub: Client, probes: Arc<Probes>) -> LeaseWatch {
    let (tx, _) = watch::channel(None);
    let sender = tx.clone();
    let task = tokio::spawn(async move {
        use futures::StreamExt;
        use kube::runtime::watcher::{self, Event};
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(hub, names::NAMESPACE);
        let mut events = std::pin::pin!(watcher::watcher(
            leases,
            federator_api::plumbing::by_name(names::LEADER_LEASE)
        ));
        while let Some(event) = events.next().await {
            let holder = match event {
                Ok(Event::Apply(l) | Event::InitApply(l)) => {
                    Some(l.spec.and_then(|s| s.holder_identity))
                }
                Ok(Event::Delete(_)) => Some(None),
                Ok(Event::InitDone) => {
                    probes.set_lease_seen();
                    if sender.borrow().is_none() {
                        // No Lease yet.
                        sender.send_replace(Some(None));
                    }
                    continue;
                }
                Ok(Event::Init) => continue,
                Err(e) => {
                    warn!(error = %e, "watch on the leader Lease failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            probes.set_lease_seen();
            sender.send_if_modified(|h| {
                if *h == holder {
                    false
                } else {
                    *h = holder;
                    true
                }
            });
        }
    });
    LeaseWatch {
        tx,
        _task: tokio_util::task::AbortOnDropHandle::new(task),
    }
}

/// The Lease watch of [`lease_holder`]; it stops when dropped.
struct LeaseWatch {
    tx: watch::Sender<Option<Option<String>>>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl LeaseWatch {
    fn subscribe(&self) -> watch::Receiver<Option<Option<String>>> {
        self.tx.subscribe()
    }
}

async fn run(
    client: Client,
    opts: ServeOptions,
    metrics: Arc<Metrics>,
    probes: Arc<Probes>,
) -> Result<()> {
    info!("federator serve started");
    let svid = match opts.bundle_endpoint.as_ref().map(|b| &b.serving) {
        Some(bundle_endpoint::Serving::Spiffe { id, ttl }) => Some((id.clone(), *ttl)),
        _ => None,
    };
    let shared = Arc::new(Shared::new(client, opts, metrics, probes));
    let endpoint_svid = async {
        match svid {
            Some((id, ttl)) => endpoint_svid::run(shared.clone(), id, ttl).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = federation::run(shared.clone()) => r,
        r = secrets::run(shared.clone()) => r,
        r = foreign::run(shared.clone()) => r,
        r = endpoint_svid => r,
    }
}
