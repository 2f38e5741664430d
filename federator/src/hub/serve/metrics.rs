//! Prometheus metrics of `federator serve` (`prometheus-client`), served with the probes on
//! `--metrics-addr` ([`federator_api::serving`]): `/metrics` (OpenMetrics text), `/healthz`
//! and `/readyz` ([`super::probes`]).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `federator_build_info{version}` | gauge | 1, labelled with the hub's version |
//! | `federator_leader` | gauge | 1 while this replica acts (holds the Lease, or runs without election) |
//! | `federator_members` | gauge | members of the federation |
//! | `federator_bundle_generation` | gauge | current trust bundle generation |
//! | `federator_root_expiry_timestamp_seconds{trust_domain}` | gauge | NotAfter of each root in the bundle (the Federation's `status.roots`) |
//! | `federator_rotation_phase{trust_domain,phase}` | gauge | 1 for the current phase (`trusting-new-root`, `re-signing`, `draining`) of each root rotation in progress; gone when it ends |
//! | `federator_rotation_phase_start_timestamp_seconds{trust_domain}` | gauge | when that rotation entered its current phase (`status.rotations[].phaseSince`) |
//! | `federator_member_ready{cluster}` | gauge | 1 when the member is Ready |
//! | `federator_member_ca_expiry_timestamp_seconds{cluster}` | gauge | NotAfter of the member's installed cluster CA |
//! | `federator_member_ca_issued_timestamp_seconds{cluster}` | gauge | NotBefore of the member's installed cluster CA (its age: `time() - …`) |
//! | `federator_member_bundle_generation{cluster}` | gauge | bundle generation the member installed |
//! | `federator_member_last_contact_timestamp_seconds{cluster}` | gauge | when the hub last reached the member (`status.lastContact`) |
//! | `federator_signed_total{cluster}` | counter | cluster CAs signed |
//! | `federator_sign_failures_total{cluster}` | counter | CSRs refused or not signed (Vault down, ...) |
//!
//! Only the leader (or a hub without election) fills the federation and member series; a
//! standby exposes `federator_build_info` and `federator_leader 0`. A member's series go when
//! it leaves, a rotation's when it ends.

use std::collections::BTreeSet;
use std::sync::Mutex;

use federator_api::condition::{self, types};
use federator_api::hub::{MemberClusterStatus, RootStatus, RotationStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label of per-member metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cluster {
    cluster: String,
}

/// The label of per-trust-domain metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct TrustDomain {
    trust_domain: String,
}

/// The labels of `federator_rotation_phase`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Phase {
    trust_domain: String,
    phase: String,
}

/// The hub's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leader: Gauge,
    members: Gauge,
    bundle_generation: Gauge,
    root_expiry: Family<TrustDomain, Gauge>,
    rotation_phase: Family<Phase, Gauge>,
    rotation_phase_start: Family<TrustDomain, Gauge>,
    member_ready: Family<Cluster, Gauge>,
    member_ca_expiry: Family<Cluster, Gauge>,
    member_ca_issued: Family<Cluster, Gauge>,
    member_bundle_generation: Family<Cluster, Gauge>,
    member_last_contact: Family<Cluster, Gauge>,
    signed: Family<Cluster, Counter>,
    sign_failures: Family<Cluster, Counter>,
    /// Clusters with per-member series, so that a member that left can be forgotten.
    known: Mutex<BTreeSet<String>>,
    /// The label sets of the federation-wide families, so that stale ones can be removed
    /// without clearing (a scrape never sees a family half-filled).
    roots_known: Mutex<BTreeSet<TrustDomain>>,
    phases_known: Mutex<BTreeSet<Phase>>,
    starts_known: Mutex<BTreeSet<TrustDomain>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            leader: Gauge::default(),
            members: Gauge::default(),
            bundle_generation: Gauge::default(),
            root_expiry: Family::default(),
            rotation_phase: Family::default(),
            rotation_phase_start: Family::default(),
            member_ready: Family::default(),
            member_ca_expiry: Family::default(),
            member_ca_issued: Family::default(),
            member_bundle_generation: Family::default(),
            member_last_contact: Family::default(),
            signed: Family::default(),
            sign_failures: Family::default(),
            known: Mutex::default(),
            roots_known: Mutex::default(),
            phases_known: Mutex::default(),
            starts_known: Mutex::default(),
        };
        let mut registry = Registry::default();
        federator_api::serving::register_build_info(
            &mut registry,
            "federator_build_info",
            "1, labelled with the hub's version",
            env!("CARGO_PKG_VERSION"),
        );
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
                "federator_root_expiry_timestamp_seconds",
                "NotAfter of each root in the bundle",
                &m.root_expiry,
            ),
            (
                "federator_rotation_phase_start_timestamp_seconds",
                "When the root rotation entered its current phase",
                &m.rotation_phase_start,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "federator_rotation_phase",
            "1 for the current phase of each root rotation in progress",
            m.rotation_phase.clone(),
        );
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
                "federator_member_ca_issued_timestamp_seconds",
                "NotBefore of the installed cluster CA",
                &m.member_ca_issued,
            ),
            (
                "federator_member_bundle_generation",
                "Bundle generation the member installed",
                &m.member_bundle_generation,
            ),
            (
                "federator_member_last_contact_timestamp_seconds",
                "When the hub last reached the member",
                &m.member_last_contact,
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

fn seconds(t: &Time) -> i64 {
    t.0.as_second()
}

/// Sets `wanted` in `family` and removes what `known` held but `wanted` does not.
fn replace<L>(family: &Family<L, Gauge>, known: &Mutex<BTreeSet<L>>, wanted: Vec<(L, i64)>)
where
    L: Clone + std::hash::Hash + Eq + Ord + EncodeLabelSet + std::fmt::Debug,
{
    let mut known = lock(known);
    let keep: BTreeSet<L> = wanted.iter().map(|(l, _)| l.clone()).collect();
    for gone in known.difference(&keep) {
        family.remove(gone);
    }
    for (label, value) in wanted {
        family.get_or_create(&label).set(value);
    }
    *known = keep;
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

    /// The roots in the bundle: one expiry series per trust domain.
    pub fn set_roots(&self, roots: &[RootStatus]) {
        let wanted = roots
            .iter()
            .map(|r| {
                (
                    TrustDomain {
                        trust_domain: r.trust_domain.clone(),
                    },
                    seconds(&r.not_after),
                )
            })
            .collect();
        replace(&self.root_expiry, &self.roots_known, wanted);
    }

    /// The rotations in progress: their phase and since when. A rotation that ended (or
    /// moved on) loses its old series.
    pub fn set_rotations(&self, rotations: &[RotationStatus]) {
        let phases = rotations
            .iter()
            .map(|r| {
                (
                    Phase {
                        trust_domain: r.trust_domain.clone(),
                        phase: r.phase.to_string(),
                    },
                    1,
                )
            })
            .collect();
        replace(&self.rotation_phase, &self.phases_known, phases);
        // A rotation without phaseSince (written by an earlier hub) has no start series
        // until its next phase.
        let starts = rotations
            .iter()
            .filter_map(|r| {
                let since = r.phase_since.as_ref()?;
                Some((
                    TrustDomain {
                        trust_domain: r.trust_domain.clone(),
                    },
                    seconds(since),
                ))
            })
            .collect();
        replace(&self.rotation_phase_start, &self.starts_known, starts);
    }

    /// A member's state, as its `MemberCluster` status says.
    pub fn set_member(&self, cluster: &str, status: &MemberClusterStatus) {
        let l = self.label(cluster);
        let ready = condition::is_true(&status.conditions, types::READY);
        self.member_ready.get_or_create(&l).set(i64::from(ready));
        self.member_ca_expiry
            .get_or_create(&l)
            .set(status.ca_not_after.as_ref().map_or(0, seconds));
        match &status.ca_not_before {
            Some(t) => {
                self.member_ca_issued.get_or_create(&l).set(seconds(t));
            }
            None => {
                self.member_ca_issued.remove(&l);
            }
        }
        self.member_bundle_generation
            .get_or_create(&l)
            .set(status.bundle_generation_acknowledged);
        match &status.last_contact {
            Some(t) => {
                self.member_last_contact.get_or_create(&l).set(seconds(t));
            }
            None => {
                self.member_last_contact.remove(&l);
            }
        }
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
            self.member_ca_issued.remove(&l);
            self.member_bundle_generation.remove(&l);
            self.member_last_contact.remove(&l);
            self.signed.remove(&l);
            self.sign_failures.remove(&l);
        }
        known.retain(|k| names.contains(k));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        federator_api::serving::render(&self.registry)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked while holding it; the data is still
    // the last value written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_api::fields;
    use federator_api::hub::RotationPhase;

    fn time(s: &str) -> Time {
        fields::parse_time(s).unwrap()
    }

    fn rotation(td: &str, phase: RotationPhase, since: Option<&str>) -> RotationStatus {
        RotationStatus {
            trust_domain: td.into(),
            phase,
            previous_sha256: "old".into(),
            sha256: "new".into(),
            removes_old_root_at: None,
            waiting_for: Vec::new(),
            phase_since: since.map(time),
            aborted: false,
        }
    }

    #[test]
    fn renders_the_exposition_format() {
        let m = Metrics::default();
        m.set_leader(true);
        m.set_federation(2, 3);
        let status = MemberClusterStatus {
            conditions: condition::set(
                &[],
                types::READY,
                true,
                "Synced",
                "",
                &time("2026-01-01T00:00:00Z"),
                None,
            ),
            ca_not_after: Some(time("2027-01-15T08:00:00Z")),
            bundle_generation_acknowledged: 3,
            last_contact: Some(time("2026-01-01T00:00:00Z")),
            ..MemberClusterStatus::default()
        };
        m.set_member("east", &status);
        m.set_member("west", &MemberClusterStatus::default());
        m.signed("east");
        m.sign_failed("west");
        let text = m.render();
        assert!(text.contains(&format!(
            "federator_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("federator_leader 1\n"));
        assert!(text.contains("federator_bundle_generation 3\n"));
        assert!(text.contains("federator_member_ready{cluster=\"east\"} 1\n"));
        assert!(text.contains("federator_member_ready{cluster=\"west\"} 0\n"));
        assert!(text.contains(
            "federator_member_ca_expiry_timestamp_seconds{cluster=\"east\"} 1800000000\n"
        ));
        assert!(text.contains(
            "federator_member_last_contact_timestamp_seconds{cluster=\"east\"} 1767225600\n"
        ));
        assert!(
            !text.contains("federator_member_last_contact_timestamp_seconds{cluster=\"west\"}"),
            "never reached: no contact time"
        );
        assert!(text.contains("federator_signed_total{cluster=\"east\"} 1\n"));
        assert!(text.contains("federator_sign_failures_total{cluster=\"west\"} 1\n"));
        m.retain_members(&["east".into()]);
        assert!(!m.render().contains("west"));
    }

    #[test]
    fn roots_and_rotations_follow_the_federation_status() {
        let m = Metrics::default();
        let root = |td: &str, not_after: &str| RootStatus {
            trust_domain: td.into(),
            sha256: "x".into(),
            subject: "CN=x".into(),
            not_after: time(not_after),
        };
        m.set_roots(&[
            root("a.local", "2036-01-01T00:00:00Z"),
            root("b.local", "2030-01-01T00:00:00Z"),
        ]);
        let text = m.render();
        assert!(text.contains(
            "federator_root_expiry_timestamp_seconds{trust_domain=\"a.local\"} 2082758400\n"
        ));
        assert!(text.contains("trust_domain=\"b.local\""));
        m.set_roots(&[root("a.local", "2036-01-01T00:00:00Z")]);
        assert!(
            !m.render().contains("b.local"),
            "a root that left the bundle"
        );

        m.set_rotations(&[rotation(
            "a.local",
            RotationPhase::TrustingNewRoot,
            Some("2026-01-01T00:00:00Z"),
        )]);
        let text = m.render();
        assert!(text.contains(
            "federator_rotation_phase{trust_domain=\"a.local\",phase=\"trusting-new-root\"} 1\n"
        ));
        assert!(text.contains(
            "federator_rotation_phase_start_timestamp_seconds{trust_domain=\"a.local\"} 1767225600\n"
        ));
        m.set_rotations(&[rotation(
            "a.local",
            RotationPhase::ReSigning,
            Some("2026-01-01T00:10:00Z"),
        )]);
        let text = m.render();
        assert!(!text.contains("trusting-new-root"), "the old phase is gone");
        assert!(text.contains("phase=\"re-signing\"} 1\n"));
        assert!(text.contains("{trust_domain=\"a.local\"} 1767226200\n"));
        m.set_rotations(&[]);
        let text = m.render();
        assert!(
            !text.contains("federator_rotation_phase{")
                && !text.contains("_start_timestamp_seconds{"),
            "the rotation ended: {text}"
        );
    }
}
