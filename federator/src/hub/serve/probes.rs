//! `/healthz` and `/readyz` of `federator serve`, next to `/metrics` on `--metrics-addr`.
//!
//! * `/healthz` (liveness): 200 while the process serves. Every task of the hub (the lease
//!   task, the federation controller, the member controllers under it) is awaited by
//!   `serve`, so one that ends ends the process; only a hub that is exiting after a failure
//!   answers 503.
//! * `/readyz` (readiness), decided by [`readiness`]: with `--leader-elect`, a standby is ready
//!   once it has read the `federator-leader` Lease (it takes part in the election), the leader
//!   once its caches synced (the federation controller's first list of the MemberClusters is
//!   in); without election, once the caches synced. Never while shutting down. A 503 carries
//!   the reason on one line.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use federator_api::{names, serving};

use super::metrics::Metrics;

/// What readiness is decided from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadyState {
    /// `--leader-elect`.
    pub leader_elect: bool,
    /// The Lease has been read at least once.
    pub lease_seen: bool,
    /// This replica holds the Lease.
    pub leader: bool,
    /// The federation controller's first list is done.
    pub synced: bool,
    /// SIGTERM (or SIGINT) arrived.
    pub stopping: bool,
}

/// Whether a hub in `state` is ready, or why not.
pub fn readiness(state: ReadyState) -> Result<(), String> {
    let not_synced = "the federation controller has not listed the MemberClusters yet";
    if state.stopping {
        return Err("shutting down".into());
    }
    if !state.leader_elect {
        return if state.synced {
            Ok(())
        } else {
            Err(not_synced.into())
        };
    }
    match (state.leader, state.synced, state.lease_seen) {
        (true, true, _) => Ok(()),
        (true, false, _) => Err(format!("leader, but {not_synced}")),
        (false, _, true) => Ok(()),
        (false, _, false) => Err(format!(
            "standby that has not read the {}/{} Lease yet",
            names::NAMESPACE,
            names::LEADER_LEASE
        )),
    }
}

/// The probe state of a hub process, set by `serve` and the federation controller.
#[derive(Debug, Default)]
pub struct Probes {
    leader_elect: bool,
    lease_seen: AtomicBool,
    leader: AtomicBool,
    synced: AtomicBool,
    stopping: AtomicBool,
    failed: Mutex<Option<String>>,
}

impl Probes {
    /// Probes of a hub with (or without) leader election.
    pub fn new(leader_elect: bool) -> Self {
        Probes {
            leader_elect,
            ..Probes::default()
        }
    }

    /// The Lease was read.
    pub fn set_lease_seen(&self) {
        self.lease_seen.store(true, Ordering::SeqCst);
    }

    /// This replica holds (or no longer holds) the Lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
        if !leader {
            // A new term lists again.
            self.synced.store(false, Ordering::SeqCst);
        }
    }

    /// The federation controller's caches synced.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Shutting down: not ready any more.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The hub failed and is exiting.
    pub fn set_failed(&self, why: &str) {
        *super::lock(&self.failed) = Some(why.to_owned());
    }

    /// The current state.
    pub fn state(&self) -> ReadyState {
        ReadyState {
            leader_elect: self.leader_elect,
            lease_seen: self.lease_seen.load(Ordering::SeqCst),
            leader: self.leader.load(Ordering::SeqCst),
            synced: self.synced.load(Ordering::SeqCst),
            stopping: self.stopping.load(Ordering::SeqCst),
        }
    }
}

/// What the hub's `--metrics-addr` server answers.
pub struct HubEndpoints {
    /// The metrics.
    pub metrics: std::sync::Arc<Metrics>,
    /// The probe state.
    pub probes: std::sync::Arc<Probes>,
}

impl serving::Endpoints for HubEndpoints {
    fn metrics(&self) -> String {
        self.metrics.render()
    }

    fn live(&self) -> Result<(), String> {
        match super::lock(&self.probes.failed).as_deref() {
            Some(why) => Err(format!("failed: {why}")),
            None => Ok(()),
        }
    }

    fn ready(&self) -> Result<(), String> {
        readiness(self.probes.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_standby_is_ready_once_it_read_the_lease_and_a_leader_once_synced() {
        let s = |leader_elect, lease_seen, leader, synced| ReadyState {
            leader_elect,
            lease_seen,
            leader,
            synced,
            stopping: false,
        };
        let cases = [
            // (state, ready, reason contains)
            (s(true, false, false, false), false, "has not read"),
            (s(true, true, false, false), true, ""),
            (s(true, true, true, false), false, "leader, but"),
            (s(true, true, true, true), true, ""),
            (s(false, false, false, false), false, "not listed"),
            (s(false, false, false, true), true, ""),
        ];
        for (state, ready, why) in cases {
            match readiness(state) {
                Ok(()) => assert!(ready, "{state:?}"),
                Err(e) => {
                    assert!(!ready, "{state:?}: {e}");
                    assert!(e.contains(why), "{state:?}: {e}");
                    assert!(!e.contains('\n'));
                }
            }
        }
        let stopping = ReadyState {
            stopping: true,
            ..s(true, true, true, true)
        };
        assert_eq!(readiness(stopping), Err("shutting down".into()));
    }

    #[test]
    fn losing_the_lease_forgets_the_sync() {
        let p = Probes::new(true);
        p.set_leader(true);
        p.set_synced();
        assert!(readiness(p.state()).is_ok());
        p.set_leader(false);
        assert!(!p.state().synced);
    }

    #[tokio::test]
    async fn serves_the_probes_and_metrics_over_http() {
        let metrics = Arc::new(Metrics::default());
        let probes = Arc::new(Probes::new(true));
        metrics.set_leader(true);
        let endpoints = Arc::new(HubEndpoints {
            metrics: metrics.clone(),
            probes: probes.clone(),
        });
        let (addr, server) = serving::serve("127.0.0.1:0".parse().unwrap(), endpoints)
            .await
            .unwrap();
        let addr = addr.to_string();
        let get = |path| testbed::http::get(&addr, path, None);
        let m = get("/metrics").await.unwrap();
        assert_eq!(m.status, 200);
        assert!(m.body.contains("federator_leader 1\n"), "{}", m.body);
        let r = get("/healthz").await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        let r = get("/readyz").await.unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body,
            "standby that has not read the federator-system/federator-leader Lease yet\n"
        );
        probes.set_lease_seen();
        assert_eq!(get("/readyz").await.unwrap().status, 200);
        probes.set_leader(true);
        let r = get("/readyz").await.unwrap();
        assert_eq!(r.status, 503);
        assert!(r.body.starts_with("leader, but"), "{}", r.body);
        probes.set_synced();
        assert_eq!(get("/readyz").await.unwrap().status, 200);
        probes.set_stopping();
        assert_eq!(get("/readyz").await.unwrap().body, "shutting down\n");
        probes.set_failed("the hub watch ended");
        assert_eq!(get("/healthz").await.unwrap().status, 503);
        drop(server);
    }
}
