//! Step 6: the status the agent reports, computed from what it observed and did.
//!
//! Everything here is a function of the cluster's state, never of the clock (the clock only
//! stamps a condition's `lastTransitionTime` when its status flips), so reconciling an
//! unchanged cluster yields an identical status and no write.

use federator_api::condition::{self, reasons};
use federator_api::member::{
    ClusterTrustStatus, CsrStatus, Installed, IstiodStatus, RemoteSecretsStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use federator_api::condition::types::{BUNDLE_INSTALLED, INSTALLED, MESH_CONFIG, READY};

/// The outcome of one check, for one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Whether it holds.
    pub ok: bool,
    /// CamelCase reason.
    pub reason: String,
    /// A sentence.
    pub message: String,
}

impl Check {
    /// A check that holds.
    pub fn pass(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A check that fails.
    pub fn fail(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// What one reconcile found out.
#[derive(Clone, Debug)]
pub struct Report {
    /// The pending CSR (`None`: none yet).
    pub csr: Option<CsrStatus>,
    /// What `cacerts` holds, when it holds the agent's material; `None` keeps the last report.
    pub installed: Option<Installed>,
    /// istiod's state (`None` keeps the last report).
    pub istiod: Option<IstiodStatus>,
    /// The `Installed` check.
    pub installed_check: Check,
    /// The `BundleInstalled` check.
    pub bundle_check: Check,
    /// The `MeshConfig` check.
    pub mesh_check: Check,
    /// Problems, each a sentence.
    pub problems: Vec<String>,
    /// The `metadata.generation` of the `ClusterTrust` this report answers.
    pub generation: Option<i64>,
    /// The remote secrets (`None`: this member takes no part in discovery).
    pub remote_secrets: Option<RemoteSecretsStatus>,
}

/// The new status. `now` is only used for conditions whose status flips.
pub fn status(
    previous: Option<&ClusterTrustStatus>,
    report: Report,
    now: &Time,
) -> ClusterTrustStatus {
    let prev_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let mut problems: Vec<String> = Vec::new();
    for p in report.problems {
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
    let checks = [
        (INSTALLED, &report.installed_check),
        (BUNDLE_INSTALLED, &report.bundle_check),
        (MESH_CONFIG, &report.mesh_check),
    ];
    let mut conditions = prev_conditions.to_vec();
    for (type_, c) in checks {
        conditions = condition::set(
            &conditions,
            type_,
            c.ok,
            &c.reason,
            &c.message,
            now,
            report.generation,
        );
    }
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, c)| !c.ok)
        .map(|(t, c)| format!("{t}: {}", c.message))
        .collect();
    let ready = failing.is_empty() && problems.is_empty();
    let (reason, message) = if ready {
        (
            reasons::READY,
            "Istio's plug-in CA, trust bundle and mesh config are in place".to_owned(),
        )
    } else if !failing.is_empty() {
        (reasons::NOT_READY, failing.join("; "))
    } else {
        (reasons::PROBLEMS, problems.join("; "))
    };
    conditions = condition::set(
        &conditions,
        READY,
        ready,
        reason,
        &message,
        now,
        report.generation,
    );
    ClusterTrustStatus {
        csr: report.csr,
        installed: report
            .installed
            .or_else(|| previous.and_then(|p| p.installed.clone())),
        istiod: report
            .istiod
            .or_else(|| previous.and_then(|p| p.istiod.clone())),
        conditions,
        problems,
        remote_secrets: report.remote_secrets,
    }
}

/// The previous status with one more problem (a failure that stopped the reconcile early):
/// everything else is kept, `Ready` turns False.
pub fn with_failure(
    previous: &ClusterTrustStatus,
    problem: &str,
    now: &Time,
    generation: Option<i64>,
) -> ClusterTrustStatus {
    let mut next = previous.clone();
    if !next.problems.iter().any(|p| p == problem) {
        next.problems.push(problem.to_owned());
    }
    next.conditions = condition::set(
        &next.conditions,
        READY,
        false,
        reasons::PROBLEMS,
        problem,
        now,
        generation,
    );
    next
}

/// What the agent knows about the `Installed` check, most important first.
#[derive(Clone, Debug, Default)]
pub struct InstallFacts<'a> {
    /// What `cacerts` holds when it holds exactly the agent's material.
    pub in_sync: Option<&'a Installed>,
    /// Why writing `cacerts` (or restarting istiod) failed.
    pub write_error: Option<&'a str>,
    /// Why the material cannot be assembled (invalid spec, bundle or chain).
    pub material_error: Option<&'a str>,
    /// Why the hub's latest chain was refused.
    pub refused: Option<&'a str>,
    /// The generation of the CSR the hub has not answered yet.
    pub waiting_for: Option<i64>,
}

/// The `Installed` check.
pub fn installed_check(f: &InstallFacts<'_>) -> Check {
    if let Some(e) = f.write_error {
        return Check::fail(reasons::WRITE_FAILED, e);
    }
    if let Some(i) = f.in_sync {
        return Check::pass(
            reasons::INSTALLED,
            format!(
                "cluster CA {} (CSR generation {}, expires {}) is in istio-system/cacerts",
                i.serial, i.csr_generation, i.not_after.0
            ),
        );
    }
    if let Some(e) = f.material_error {
        return Check::fail(reasons::INVALID_MATERIAL, e);
    }
    if let Some(e) = f.refused {
        return Check::fail(reasons::CHAIN_REJECTED, e);
    }
    match f.waiting_for {
        Some(g) => Check::fail(
            reasons::WAITING_FOR_SIGNATURE,
            format!("waiting for the hub to sign CSR generation {g}"),
        ),
        None => Check::fail(reasons::NO_CSR, "no CSR yet"),
    }
}

/// The `BundleInstalled` check: `root-cert.pem` (`None`: no `cacerts`) holds the bundle.
pub fn bundle_check(
    actual_root: Option<&[u8]>,
    bundle: Option<&federator_core::bundle::TrustBundle>,
    generation: i64,
) -> Check {
    let Some(bundle) = bundle else {
        return Check::fail(
            reasons::INVALID_BUNDLE,
            "spec.bundle cannot be used (see problems)",
        );
    };
    if actual_root == Some(bundle.to_pem().as_bytes()) && !bundle.is_empty() {
        Check::pass(
            reasons::BUNDLE_INSTALLED,
            format!(
                "root-cert.pem holds bundle generation {generation}: {} root(s) of {} trust domain(s)",
                bundle.roots().len(),
                bundle.trust_domains().count()
            ),
        )
    } else {
        Check::fail(
            reasons::BUNDLE_PENDING,
            format!("root-cert.pem does not hold bundle generation {generation} yet"),
        )
    }
}

/// What the agent knows about the mesh config.
#[derive(Clone, Debug)]
pub enum MeshFacts {
    /// The spec is unusable, so the mesh config was not looked at.
    Skipped,
    /// No ConfigMap `istio-system/istio`.
    Absent,
    /// Reading, merging or writing it failed.
    Failed(String),
    /// It lists the peers' roots.
    InSync {
        /// Its `trustDomain`.
        mesh_trust_domain: String,
        /// How many entries federator manages.
        managed_entries: usize,
    },
}

/// The `MeshConfig` check, and a problem when the mesh's trust domain is not the cluster's.
/// `multi_root` is istiod's flag (`None`: no istiod Deployment).
pub fn mesh_check(
    facts: &MeshFacts,
    own_trust_domain: &str,
    multi_root: Option<bool>,
) -> (Check, Option<String>) {
    match facts {
        MeshFacts::Skipped => (
            Check::fail(
                reasons::INVALID_SPEC,
                "the spec cannot be used (see problems)",
            ),
            None,
        ),
        MeshFacts::Absent => (
            Check::pass(
                reasons::NO_MESH_CONFIG,
                "ConfigMap istio-system/istio not found: no mesh config to update",
            ),
            None,
        ),
        MeshFacts::Failed(e) => (Check::fail(reasons::MESH_CONFIG_FAILED, e.clone()), None),
        MeshFacts::InSync {
            mesh_trust_domain,
            managed_entries,
        } => {
            if mesh_trust_domain != own_trust_domain {
                let msg = format!(
                    "the mesh config's trustDomain is {mesh_trust_domain} but this cluster's trust domain is {own_trust_domain}: istiod issues workload identities in {mesh_trust_domain}; set meshConfig.trustDomain to {own_trust_domain}"
                );
                return (
                    Check::fail(reasons::TRUST_DOMAIN_MISMATCH, msg.clone()),
                    Some(msg),
                );
            }
            let mut msg =
                format!("caCertificates lists {managed_entries} root(s) of other trust domains");
            if *managed_entries > 0 && multi_root == Some(false) {
                msg.push_str(
                    "; note: istiod runs without ISTIO_MULTIROOT_MESH=true, so caCertificates has no effect on sidecar trust (root-cert.pem still carries every root)",
                );
            }
            (Check::pass(reasons::IN_SYNC, msg), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ok: bool) -> Report {
        Report {
            csr: Some(CsrStatus {
                generation: 1,
                pem: "CSR".into(),
                digest: "d".into(),
            }),
            installed: None,
            istiod: None,
            installed_check: if ok {
                Check::pass("Installed", "in place")
            } else {
                Check::fail("WaitingForSignature", "waiting")
            },
            bundle_check: Check::pass("BundleInstalled", "ok"),
            mesh_check: Check::pass("InSync", "ok"),
            problems: Vec::new(),
            generation: Some(1),
            remote_secrets: None,
        }
    }

    fn t(n: u32) -> Time {
        federator_api::fields::parse_time(&format!("2026-01-01T00:00:0{n}Z")).unwrap()
    }

    #[test]
    fn same_report_same_status() {
        let a = status(None, report(true), &t(1));
        let b = status(Some(&a), report(true), &t(2));
        assert_eq!(
            a, b,
            "a reconcile of an unchanged cluster must not change the status"
        );
        assert!(condition::is_true(&a.conditions, READY));
        assert_eq!(a.conditions.len(), 4);
    }

    #[test]
    fn ready_needs_every_check_and_no_problem() {
        let a = status(None, report(false), &t(1));
        let ready = a.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("Installed: waiting"), "{ready:?}");

        let mut r = report(true);
        r.problems = vec!["p".into(), "p".into()];
        let b = status(Some(&a), r, &t(2));
        assert_eq!(b.problems, vec!["p".to_owned()]);
        let ready = b.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Problems")
        );
        let installed = b.conditions.iter().find(|c| c.type_ == INSTALLED).unwrap();
        assert_eq!(installed.last_transition_time, t(2));
    }

    #[test]
    fn keeps_the_last_good_installed_and_istiod_reports() {
        let mut r = report(true);
        r.installed = Some(Installed {
            serial: "01".into(),
            sha256: String::new(),
            not_after: t(9),
            bundle_generation: 0,
            csr_generation: 0,
        });
        r.istiod = Some(IstiodStatus {
            state: federator_api::member::IstiodState::Restarted,
            multi_root: false,
            version: federator_core::istiod::IstiodVersion::parse("1.27.9"),
            published_bundle_generation: Some(0),
            message: String::new(),
            warnings: vec!["a risk".into()],
        });
        let a = status(None, r, &t(1));
        let b = status(Some(&a), report(false), &t(2));
        assert_eq!(b.installed, a.installed);
        assert_eq!(b.istiod, a.istiod);
    }

    #[test]
    fn installed_check_names_the_most_important_fact() {
        let inst = Installed {
            serial: "0a".into(),
            csr_generation: 2,
            not_after: federator_api::fields::parse_time("2030-01-01T00:00:00Z").unwrap(),
            sha256: String::new(),
            bundle_generation: 0,
        };
        let c = installed_check(&InstallFacts {
            in_sync: Some(&inst),
            refused: Some("bad chain"),
            ..Default::default()
        });
        assert!(c.ok && c.message.contains("0a"), "{c:?}");
        let c = installed_check(&InstallFacts {
            in_sync: Some(&inst),
            write_error: Some("namespace istio-system does not exist"),
            ..Default::default()
        });
        assert_eq!((c.ok, c.reason.as_str()), (false, "WriteFailed"));
        let c = installed_check(&InstallFacts {
            refused: Some("bad chain"),
            waiting_for: Some(1),
            ..Default::default()
        });
        assert_eq!(c.reason, "ChainRejected");
        let c = installed_check(&InstallFacts {
            waiting_for: Some(3),
            ..Default::default()
        });
        assert!(!c.ok && c.message.contains("generation 3"), "{c:?}");
    }

    #[test]
    fn mesh_check_reports_a_trust_domain_mismatch_and_the_multiroot_note() {
        let facts = MeshFacts::InSync {
            mesh_trust_domain: "cluster.local".into(),
            managed_entries: 1,
        };
        let (c, p) = mesh_check(&facts, "east.local", Some(true));
        assert_eq!((c.ok, c.reason.as_str()), (false, "TrustDomainMismatch"));
        assert!(p.unwrap().contains("cluster.local"));
        let (c, p) = mesh_check(&facts, "cluster.local", Some(false));
        assert!(c.ok && c.message.contains("ISTIO_MULTIROOT_MESH") && p.is_none());
        let (c, _) = mesh_check(&facts, "cluster.local", Some(true));
        assert!(c.ok && !c.message.contains("ISTIO_MULTIROOT_MESH"));
        assert!(mesh_check(&MeshFacts::Absent, "x", None).0.ok);
        assert!(!mesh_check(&MeshFacts::Failed("e".into()), "x", None).0.ok);
    }

    #[test]
    fn a_failure_adds_a_problem_and_keeps_the_rest() {
        let a = status(None, report(true), &t(1));
        let b = with_failure(&a, "cannot update Secret", &t(2), Some(1));
        assert_eq!(b.problems, vec!["cannot update Secret".to_owned()]);
        assert_eq!(b.csr, a.csr);
        assert!(!condition::is_true(&b.conditions, READY));
        assert!(condition::is_true(&b.conditions, INSTALLED));
        assert_eq!(with_failure(&b, "cannot update Secret", &t(3), Some(1)), b);
    }
}
