//! Pure decisions of the hub for one member: what its `ClusterTrust` spec must say, whether a
//! CSR needs signing, whether a renewal is due, and what the member's status on the hub is.
//! No I/O here; `serve` does the reading, signing and writing.

use federator_api::condition;
use federator_api::hub::MemberClusterStatus;
use federator_api::member::{BundleEntry, ClusterTrust, ClusterTrustSpec, CsrStatus};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What every member must currently be told.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// The bundle, per trust domain.
    pub bundle: Vec<BundleEntry>,
    /// Its generation.
    pub bundle_generation: i64,
    /// Key algorithm for cluster CA keys.
    pub key_algorithm: String,
    /// Renewal point, percent of lifetime.
    pub renew_at_percent: u8,
    /// The root that signs, per trust domain (SHA-256).
    pub signing_roots: std::collections::BTreeMap<String, String>,
    /// Trust domains whose members must move to their new root now (a rotation whose new
    /// root every member already trusts).
    pub resign: std::collections::BTreeSet<String>,
}

/// SHA-256 of the last certificate (the root) of a PEM chain.
pub fn chain_root_sha256(chain_pem: &str) -> Option<String> {
    federator_core::cert::parse_pem_certificates(chain_pem.as_bytes(), "chain")
        .ok()?
        .last()
        .map(|d| federator_core::cert::fingerprint(d))
}

/// The plan for one member.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberPlan {
    /// The spec to write (without a new signature; `serve` adds it).
    pub spec: ClusterTrustSpec,
    /// A CSR to sign and put into `spec.signed`.
    pub sign: Option<CsrStatus>,
    /// When to look again even if nothing changes (renewal time).
    pub wake_at: Option<OffsetDateTime>,
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Plans a member's spec from its current `ClusterTrust` and the federation's desired state.
pub fn plan_member(
    ct: &ClusterTrust,
    cluster: &str,
    trust_domain: &str,
    desired: &Desired,
    now: OffsetDateTime,
) -> MemberPlan {
    let mut spec = ct.spec.clone();
    spec.cluster_name = cluster.to_owned();
    spec.trust_domain = trust_domain.to_owned();
    spec.bundle = desired.bundle.clone();
    spec.bundle_generation = desired.bundle_generation;
    spec.key_algorithm = desired.key_algorithm.clone();
    if spec.csr_generation < 1 {
        spec.csr_generation = 1;
    }
    // A trust domain change invalidates what was signed.
    if spec.signed.is_some() && ct.spec.trust_domain != trust_domain {
        spec.signed = None;
        spec.csr_generation += 1;
    }

    let csr = ct.status.as_ref().and_then(|s| s.csr.clone());
    let answered = |c: &CsrStatus| {
        spec.signed
            .as_ref()
            .is_some_and(|s| s.csr_digest == c.digest)
    };
    let sign = csr.filter(|c| c.generation == spec.csr_generation && !answered(c));

    // A rotation in its re-signing phase: a CA under the old root is renewed now.
    if sign.is_none()
        && desired.resign.contains(trust_domain)
        && let Some(signed) = &spec.signed
        && signed.generation == spec.csr_generation
        && chain_root_sha256(&signed.chain_pem).as_ref() != desired.signing_roots.get(trust_domain)
    {
        spec.csr_generation += 1;
    }

    let mut wake_at = None;
    if sign.is_none()
        && let Some(signed) = &spec.signed
        && signed.generation == spec.csr_generation
        && let Some(renew_after) = parse_time(&signed.renew_after)
    {
        if now >= renew_after {
            spec.csr_generation += 1;
        } else {
            wake_at = Some(renew_after);
        }
    }
    MemberPlan {
        spec,
        sign,
        wake_at,
    }
}

/// When to renew a CA issued at `now` that expires at `not_after`.
pub fn renew_after(now: OffsetDateTime, not_after: OffsetDateTime, percent: u8) -> OffsetDateTime {
    let lifetime = not_after - now;
    now + lifetime * (f64::from(percent.clamp(1, 99)) / 100.0)
}

/// Inputs to a member's hub-side status.
pub struct StatusInputs<'a> {
    /// The member's exchange object, if it could be read.
    pub ct: Option<&'a ClusterTrust>,
    /// Whether the member's API server answered.
    pub reachable: bool,
    /// Problems found by the hub (unreachable, CSR refused, ...).
    pub hub_problems: &'a [String],
    /// The current bundle generation.
    pub bundle_generation: i64,
    /// Now.
    pub now: OffsetDateTime,
    /// Refresh `lastContact` when older than this even if nothing else changed.
    pub heartbeat: std::time::Duration,
}

/// Computes the member's status on the hub. Equal inputs give an equal status (and the same
/// `lastContact`, within the heartbeat), so unchanged members cause no writes.
pub fn member_status(
    previous: Option<&MemberClusterStatus>,
    inp: &StatusInputs<'_>,
) -> MemberClusterStatus {
    let now_s = federator_core::cert::rfc3339(inp.now);
    let prev = previous.cloned().unwrap_or_default();
    let agent = inp.ct.and_then(|c| c.status.clone()).unwrap_or_default();
    let spec = inp.ct.map(|c| c.spec.clone()).unwrap_or_default();
    let mut problems: Vec<String> = inp.hub_problems.to_vec();
    problems.extend(agent.problems.iter().cloned());

    let installed = agent.installed.clone();
    let installed_current = installed
        .as_ref()
        .is_some_and(|i| spec.signed.as_ref().is_some_and(|s| s.serial == i.serial));
    let in_cacerts = installed.as_ref().map(|i| i.bundle_generation).unwrap_or(0);
    // With an istiod, the bundle counts once istiod publishes it (a change that needs a
    // restart, or one istiod ignored, is not trusted yet).
    let published = agent
        .istiod
        .as_ref()
        .and_then(|i| i.published_bundle_generation);
    let bundle_acked = published.map_or(in_cacerts, |p| p.min(in_cacerts));

    let mut conditions = prev.conditions.clone();
    conditions = condition::set(
        &conditions,
        "Reachable",
        inp.reachable,
        if inp.reachable {
            "Reachable"
        } else {
            "Unreachable"
        },
        "",
        &now_s,
    );
    conditions = condition::set(
        &conditions,
        "Installed",
        installed_current,
        if installed_current {
            "Installed"
        } else {
            "Pending"
        },
        "",
        &now_s,
    );
    let acked = bundle_acked >= inp.bundle_generation && inp.bundle_generation > 0;
    let istiod_behind = !acked && in_cacerts >= inp.bundle_generation && inp.bundle_generation > 0;
    let (reason, message) = match (acked, istiod_behind, agent.istiod.as_ref()) {
        (true, _, _) => ("Current", String::new()),
        (false, true, Some(i)) => (
            "IstiodBehind",
            format!(
                "cacerts holds bundle generation {in_cacerts} but istiod{} publishes generation {}: {}",
                if i.version.is_empty() {
                    String::new()
                } else {
                    format!(" {}", i.version)
                },
                published.unwrap_or(0),
                i.message
            ),
        ),
        _ => ("Behind", String::new()),
    };
    conditions = condition::set(
        &conditions,
        "BundleAcknowledged",
        acked,
        reason,
        &message,
        &now_s,
    );
    let ready = inp.reachable && installed_current && acked && problems.is_empty();
    conditions = condition::set(
        &conditions,
        "Ready",
        ready,
        if ready { "Ready" } else { "NotReady" },
        &problems.join("; "),
        &now_s,
    );

    let mut status = MemberClusterStatus {
        conditions,
        ca_serial: installed
            .as_ref()
            .map(|i| i.serial.clone())
            .unwrap_or_default(),
        ca_not_after: installed
            .as_ref()
            .map(|i| i.not_after.clone())
            .unwrap_or_default(),
        ca_root_sha256: if installed_current {
            spec.signed
                .as_ref()
                .and_then(|s| chain_root_sha256(&s.chain_pem))
                .unwrap_or_default()
        } else {
            prev.ca_root_sha256.clone()
        },
        bundle_generation_acknowledged: bundle_acked,
        istiod: agent
            .istiod
            .as_ref()
            .map(|i| i.state.clone())
            .unwrap_or_default(),
        istiod_version: agent
            .istiod
            .as_ref()
            .map(|i| i.version.clone())
            .unwrap_or_default(),
        last_contact: prev.last_contact.clone(),
        problems,
    };
    if inp.reachable {
        let stale = parse_time(&prev.last_contact).is_none_or(|t| inp.now - t >= inp.heartbeat);
        let changed = MemberClusterStatus {
            last_contact: String::new(),
            ..status.clone()
        } != MemberClusterStatus {
            last_contact: String::new(),
            ..prev
        };
        if stale || changed {
            status.last_contact = now_s;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_api::member::{ClusterTrustStatus, Installed, SignedCa};

    fn ct(gen_: i64, csr: Option<(i64, &str)>, signed: Option<(&str, i64, &str)>) -> ClusterTrust {
        let mut c = ClusterTrust::new(
            "local",
            ClusterTrustSpec {
                cluster_name: "c1".into(),
                trust_domain: "td".into(),
                csr_generation: gen_,
                signed: signed.map(|(d, g, renew)| SignedCa {
                    csr_digest: d.into(),
                    generation: g,
                    serial: "01".into(),
                    renew_after: renew.into(),
                    ..SignedCa::default()
                }),
                ..ClusterTrustSpec::default()
            },
        );
        c.status = Some(ClusterTrustStatus {
            csr: csr.map(|(g, d)| CsrStatus {
                generation: g,
                pem: "pem".into(),
                digest: d.into(),
            }),
            ..ClusterTrustStatus::default()
        });
        c
    }

    fn t(s: &str) -> OffsetDateTime {
        parse_time(s).unwrap()
    }

    const NOW: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn signs_a_current_unanswered_csr_only() {
        let d = Desired::default();
        assert!(
            plan_member(&ct(1, Some((1, "a")), None), "c1", "td", &d, t(NOW))
                .sign
                .is_some()
        );
        assert!(
            plan_member(
                &ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z"))),
                "c1",
                "td",
                &d,
                t(NOW)
            )
            .sign
            .is_none()
        );
        // A stale CSR (older generation) is not signed.
        assert!(
            plan_member(
                &ct(2, Some((1, "a")), Some(("a", 1, ""))),
                "c1",
                "td",
                &d,
                t(NOW)
            )
            .sign
            .is_none()
        );
    }

    #[test]
    fn renews_when_due_and_wakes_up_otherwise() {
        let d = Desired::default();
        let p = plan_member(
            &ct(1, Some((1, "a")), Some(("a", 1, "2025-12-31T00:00:00Z"))),
            "c1",
            "td",
            &d,
            t(NOW),
        );
        assert_eq!(p.spec.csr_generation, 2);
        let p = plan_member(
            &ct(1, Some((1, "a")), Some(("a", 1, "2026-01-02T00:00:00Z"))),
            "c1",
            "td",
            &d,
            t(NOW),
        );
        assert_eq!(p.spec.csr_generation, 1);
        assert_eq!(p.wake_at, Some(t("2026-01-02T00:00:00Z")));
        // Already renewing: no second bump.
        let p = plan_member(
            &ct(2, Some((1, "a")), Some(("a", 1, "2025-12-31T00:00:00Z"))),
            "c1",
            "td",
            &d,
            t(NOW),
        );
        assert_eq!(p.spec.csr_generation, 2);
    }

    #[test]
    fn plan_is_stable_when_nothing_changed() {
        let d = Desired {
            bundle: vec![BundleEntry {
                trust_domain: "td".into(),
                roots_pem: "x".into(),
            }],
            bundle_generation: 3,
            key_algorithm: "ecdsa-p256".into(),
            renew_at_percent: 66,
            ..Desired::default()
        };
        let mut c = ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z")));
        let p = plan_member(&c, "c1", "td", &d, t(NOW));
        c.spec = p.spec.clone();
        assert_eq!(plan_member(&c, "c1", "td", &d, t(NOW)).spec, c.spec);
    }

    #[test]
    fn a_rotation_renews_cas_under_the_old_root_only() {
        let ca = federator_core::ca::IssuingCa::create_root(&Default::default(), t(NOW)).unwrap();
        let chain = ca.chain_pem();
        let mut c = ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z")));
        c.spec.signed.as_mut().unwrap().chain_pem = chain.clone();
        let root_fp = chain_root_sha256(&chain).unwrap();
        let mut d = Desired::default();
        d.resign.insert("td".into());
        d.signing_roots.insert("td".into(), "another-root".into());
        assert_eq!(
            plan_member(&c, "c1", "td", &d, t(NOW)).spec.csr_generation,
            2,
            "old root: renew now"
        );
        d.signing_roots.insert("td".into(), root_fp);
        assert_eq!(
            plan_member(&c, "c1", "td", &d, t(NOW)).spec.csr_generation,
            1,
            "already on the new root"
        );
        d.resign.clear();
        d.signing_roots.insert("td".into(), "another-root".into());
        assert_eq!(
            plan_member(&c, "c1", "td", &d, t(NOW)).spec.csr_generation,
            1,
            "not re-signing yet"
        );
    }

    #[test]
    fn renewal_point_is_a_fraction_of_the_lifetime() {
        let now = t(NOW);
        let r = renew_after(now, now + time::Duration::seconds(100), 60);
        assert_eq!(r, now + time::Duration::seconds(60));
    }

    #[test]
    fn status_only_changes_when_something_changed() {
        let mut c = ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z")));
        c.spec.bundle_generation = 2;
        c.status.as_mut().unwrap().installed = Some(Installed {
            serial: "01".into(),
            bundle_generation: 2,
            csr_generation: 1,
            ..Installed::default()
        });
        let inp = |now: &str| StatusInputs {
            ct: Some(&c),
            reachable: true,
            hub_problems: &[],
            bundle_generation: 2,
            now: t(now),
            heartbeat: std::time::Duration::from_secs(300),
        };
        let s1 = member_status(None, &inp(NOW));
        assert!(condition::is_true(&s1.conditions, "Ready"), "{s1:?}");
        let s2 = member_status(Some(&s1), &inp("2026-01-01T00:01:00Z"));
        assert_eq!(s1, s2, "no change within the heartbeat");
        let s3 = member_status(Some(&s1), &inp("2026-01-01T00:06:00Z"));
        assert_ne!(s1.last_contact, s3.last_contact);
        let down = StatusInputs {
            reachable: false,
            ..inp("2026-01-01T00:01:00Z")
        };
        let s4 = member_status(Some(&s1), &down);
        assert!(!condition::is_true(&s4.conditions, "Ready"));
        assert_eq!(s4.last_contact, s1.last_contact);
    }
}
