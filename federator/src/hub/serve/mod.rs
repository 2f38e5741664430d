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
//! * This module: signals, the metrics server ([`metrics`]) and, with `--leader-elect`, the
//!   `federator-leader` Lease: only its holder runs the controllers; a replica that loses it
//!   exits, so its supervisor restarts it as a follower.

pub mod federation;
pub mod fleet;
pub mod member;
pub mod metrics;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use federator_api::events::Events;
use federator_api::names;
use federator_api::plumbing::Backoff;
use kube::Client;
use tokio::sync::watch;
use tracing::info;

use self::metrics::Metrics;
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
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<std::net::SocketAddr>,
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
    /// The signer, loaded by the federation controller.
    signer: Mutex<Option<Arc<Signer>>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Events on hub objects.
    pub events: Events,
}

impl Shared {
    /// The shared state of a hub process.
    pub fn new(client: Client, opts: ServeOptions, metrics: Arc<Metrics>) -> Self {
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
            signer: Mutex::new(None),
            metrics,
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
    let _metrics_server = match opts.metrics_addr {
        Some(addr) => Some(metrics::serve(addr, metrics.clone()).await?),
        None => None,
    };
    let shutdown = shutdown_signal();
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

async fn run(client: Client, opts: ServeOptions, metrics: Arc<Metrics>) -> Result<()> {
    info!("federator serve started");
    federation::run(Arc::new(Shared::new(client, opts, metrics))).await
}
