//! Pure decisions of the hub for one member: what its `ClusterTrust` spec must say, whether a
//! CSR needs signing, whether a renewal is due, the events an operator should see, and what
//! the member's status on the hub is. No I/O here; the member controller reads, signs and
//! writes.

use federator_api::condition::{self, reasons, types};
use federator_api::events::{Note, reasons as events};
use federator_api::fields;
use federator_api::hub::{MemberClusterStatus, MemberRemoteSecrets};
use federator_api::member::{ClusterTrust, ClusterTrustSpec, CsrStatus};
use time::OffsetDateTime;

use super::chain::{chain_constrained, chain_not_before, chain_root_sha256};
use super::federation::Desired;

/// Why the hub asks the agent for a new CSR generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrRequest {
    /// The member's trust domain changed: what was signed no longer applies.
    TrustDomainChanged,
    /// A root rotation moves the member to the new root.
    ReSign,
    /// The cluster CA reached its renewal point.
    Renewal,
    /// An operator asked for a re-issue (`federator renew cluster`).
    Reissue,
    /// The federation's `constrainToTrustDomain` changed: the CA signed now has the other
    /// shape.
    PolicyChanged,
}

/// The plan for one member.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberPlan {
    /// The spec to write (without a new signature; the controller adds it).
    pub spec: ClusterTrustSpec,
    /// A CSR to sign and put into `spec.signed`.
    pub sign: Option<CsrStatus>,
    /// Why `spec.csrGeneration` was increased, if it was.
    pub request: Option<CsrRequest>,
    /// When to look again even if nothing changes (renewal time).
    pub wake_at: Option<OffsetDateTime>,
    /// Whether cluster CAs are signed with the trust-domain name constraint.
    pub constrained: bool,
}

impl MemberPlan {
    /// The events this plan is worth once written, given the spec it replaces.
    pub fn notes(&self, previous: &ClusterTrustSpec) -> Vec<Note> {
        let mut notes = Vec::new();
        let generation = self.spec.csr_generation;
        match self.request {
            Some(CsrRequest::Renewal) => notes.push(Note::normal(
                events::RENEWAL_REQUESTED,
                "Renew",
                format!(
                    "cluster CA {} reached its renewal point; asked for CSR generation {generation}",
                    previous.signed.as_ref().map(|s| s.serial.as_str()).unwrap_or("?")
                ),
            )),
            Some(CsrRequest::ReSign) => notes.push(Note::normal(
                events::RE_SIGN_REQUESTED,
                "Renew",
                format!(
                    "root rotation of {}: asked for CSR generation {generation} to move to the new root",
                    self.spec.trust_domain
                ),
            )),
            Some(CsrRequest::Reissue) => notes.push(Note::normal(
                events::REISSUE_REQUESTED,
                "Renew",
                format!(
                    "re-issue of cluster CA {} requested; asked for CSR generation {generation} (a fresh key in the member)",
                    previous.signed.as_ref().map(|s| s.serial.as_str()).unwrap_or("?")
                ),
            )),
            Some(CsrRequest::PolicyChanged) => notes.push(Note::normal(
                events::REISSUE_REQUESTED,
                "Renew",
                format!(
                    "the federation's trust-domain name constraint was turned {}; asked for CSR generation {generation} to re-issue cluster CA {}",
                    if self.constrained { "on" } else { "off" },
                    previous.signed.as_ref().map(|s| s.serial.as_str()).unwrap_or("?")
                ),
            )),
            Some(CsrRequest::TrustDomainChanged) => notes.push(Note::normal(
                events::RENEWAL_REQUESTED,
                "Renew",
                format!(
                    "trust domain changed to {}; asked for CSR generation {generation}",
                    self.spec.trust_domain
                ),
            )),
            None => {}
        }
        if self.spec.bundle_generation != previous.bundle_generation {
            notes.push(Note::normal(
                events::BUNDLE_UPDATED,
                "Bundle",
                format!(
                    "sent bundle generation {} ({} trust domain(s))",
                    self.spec.bundle_generation,
                    self.spec.bundle.len()
                ),
            ));
        }
        notes
    }
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
    spec.foreign = desired.foreign.clone();
    spec.bundle_generation = desired.bundle_generation;
    spec.key_algorithm = desired.key_algorithm.clone();
    if spec.csr_generation < 1 {
        spec.csr_generation = 1;
    }
    let mut request = None;
    // A trust domain change invalidates what was signed.
    if spec.signed.is_some() && ct.spec.trust_domain != trust_domain {
        spec.signed = None;
        spec.csr_generation += 1;
        request = Some(CsrRequest::TrustDomainChanged);
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
        request = Some(CsrRequest::ReSign);
    }

    // An operator asked to re-issue the CA that is signed now.
    if sign.is_none()
        && request.is_none()
        && let Some(serial) = desired.reissue.get(cluster)
        && let Some(signed) = &spec.signed
        && signed.generation == spec.csr_generation
        && same_serial(&signed.serial, serial)
    {
        spec.csr_generation += 1;
        request = Some(CsrRequest::Reissue);
    }

    // The name constraint was turned on or off: the CA signed now has the other shape.
    if sign.is_none()
        && request.is_none()
        && let Some(signed) = &spec.signed
        && signed.generation == spec.csr_generation
        && chain_constrained(&signed.chain_pem) == Some(!desired.constrain_to_trust_domain)
    {
        spec.csr_generation += 1;
        request = Some(CsrRequest::PolicyChanged);
    }

    let mut wake_at = None;
    if sign.is_none()
        && let Some(signed) = &spec.signed
        && signed.generation == spec.csr_generation
        && let Some(renew_after) = &signed.renew_after
    {
        let renew_after = fields::offset(renew_after);
        if now >= renew_after {
            spec.csr_generation += 1;
            request = Some(CsrRequest::Renewal);
        } else {
            wake_at = Some(renew_after);
        }
    }
    MemberPlan {
        spec,
        sign,
        request,
        wake_at,
        constrained: desired.constrain_to_trust_domain,
    }
}

/// Whether two serials are the same, however they are spelled (case, colons).
pub fn same_serial(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(char::is_ascii_hexdigit)
            .map(|c| c.to_ascii_lowercase())
            .collect::<String>()
    };
    !norm(a).is_empty() && norm(a) == norm(b)
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
    /// The `MemberCluster`'s `metadata.generation`.
    pub observed_generation: Option<i64>,
    /// Now.
    pub now: OffsetDateTime,
    /// Refresh `lastContact` when older than this even if nothing else changed.
    pub heartbeat: std::time::Duration,
}

/// At most this many of the agent's problems are mirrored into the hub's status...
pub const MAX_MIRRORED_PROBLEMS: usize = 16;
/// ...each cut at this many characters: what a member writes cannot bloat the hub's objects.
pub const MAX_PROBLEM_CHARS: usize = 512;

/// The agent's problems as the hub mirrors them: the first [`MAX_MIRRORED_PROBLEMS`], each cut
/// at [`MAX_PROBLEM_CHARS`] characters, and a last line counting the rest. An agent reports a
/// few short sentences; a member writing thousands, or megabytes, is bounded here.
pub fn mirrored_problems(agent: &[String]) -> Vec<String> {
    let mut out: Vec<String> = agent
        .iter()
        .take(MAX_MIRRORED_PROBLEMS)
        .map(|p| match p.char_indices().nth(MAX_PROBLEM_CHARS) {
            Some((cut, _)) => format!("{}…", &p[..cut]),
            None => p.clone(),
        })
        .collect();
    if agent.len() > MAX_MIRRORED_PROBLEMS {
        out.push(format!(
            "… and {} more problems in the member's ClusterTrust status",
            agent.len() - MAX_MIRRORED_PROBLEMS
        ));
    }
    out
}

/// Computes the member's status on the hub. Equal inputs give an equal status (and the same
/// `lastContact`, within the heartbeat), so unchanged members cause no writes.
pub fn member_status(
    previous: Option<&MemberClusterStatus>,
    inp: &StatusInputs<'_>,
) -> MemberClusterStatus {
    let now = fields::time(inp.now);
    let prev = previous.cloned().unwrap_or_default();
    let agent = inp.ct.and_then(|c| c.status.clone()).unwrap_or_default();
    let spec = inp.ct.map(|c| c.spec.clone()).unwrap_or_default();
    let mut problems: Vec<String> = inp.hub_problems.to_vec();
    problems.extend(mirrored_problems(&agent.problems));

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

    let set = |conditions: &[condition::Condition], type_, ok, reason, message: &str| {
        condition::set(
            conditions,
            type_,
            ok,
            reason,
            message,
            &now,
            inp.observed_generation,
        )
    };
    let mut conditions = prev.conditions.clone();
    conditions = set(
        &conditions,
        types::REACHABLE,
        inp.reachable,
        if inp.reachable {
            reasons::REACHABLE
        } else {
            reasons::UNREACHABLE
        },
        "",
    );
    conditions = set(
        &conditions,
        types::INSTALLED,
        installed_current,
        if installed_current {
            reasons::INSTALLED
        } else {
            reasons::PENDING
        },
        "",
    );
    let acked = bundle_acked >= inp.bundle_generation && inp.bundle_generation > 0;
    let istiod_behind = !acked && in_cacerts >= inp.bundle_generation && inp.bundle_generation > 0;
    let (reason, message) = match (acked, istiod_behind, agent.istiod.as_ref()) {
        (true, _, _) => (reasons::CURRENT, String::new()),
        (false, true, Some(i)) => (
            reasons::ISTIOD_BEHIND,
            format!(
                "cacerts holds bundle generation {in_cacerts} but istiod{} publishes generation {}: {}",
                i.version
                    .as_ref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default(),
                published.unwrap_or(0),
                i.message
            ),
        ),
        _ => (reasons::BEHIND, String::new()),
    };
    conditions = set(
        &conditions,
        types::BUNDLE_ACKNOWLEDGED,
        acked,
        reason,
        &message,
    );
    let ready = inp.reachable && installed_current && acked && problems.is_empty();
    conditions = set(
        &conditions,
        types::READY,
        ready,
        if ready {
            reasons::READY
        } else {
            reasons::NOT_READY
        },
        &problems.join("; "),
    );

    let mut status = MemberClusterStatus {
        conditions,
        ca_serial: installed
            .as_ref()
            .map(|i| i.serial.clone())
            .unwrap_or_default(),
        ca_not_after: installed.as_ref().map(|i| i.not_after.clone()),
        ca_not_before: if installed_current {
            spec.signed
                .as_ref()
                .and_then(|s| chain_not_before(&s.chain_pem))
        } else {
            prev.ca_not_before.clone()
        },
        ca_root_sha256: if installed_current {
            spec.signed
                .as_ref()
                .and_then(|s| chain_root_sha256(&s.chain_pem))
                .unwrap_or_default()
        } else {
            prev.ca_root_sha256.clone()
        },
        bundle_generation_acknowledged: bundle_acked,
        istiod: agent.istiod.as_ref().map(|i| i.state),
        istiod_version: agent.istiod.as_ref().and_then(|i| i.version.clone()),
        last_contact: prev.last_contact.clone(),
        problems,
        remote_secrets: match inp.ct {
            None => prev.remote_secrets.clone(),
            Some(_) if spec.peers_digest.is_empty() => None,
            Some(_) => {
                let reported = agent.remote_secrets.clone().unwrap_or_default();
                Some(MemberRemoteSecrets {
                    current: reported.peers_digest == spec.peers_digest,
                    peers: reported.peers,
                    foreign: reported.foreign,
                })
            }
        },
    };
    if inp.reachable {
        let stale = prev
            .last_contact
            .as_ref()
            .is_none_or(|t| inp.now - fields::offset(t) >= inp.heartbeat);
        let changed = MemberClusterStatus {
            last_contact: None,
            ..status.clone()
        } != MemberClusterStatus {
            last_contact: None,
            ..prev
        };
        if stale || changed {
            status.last_contact = Some(now);
        }
    }
    status
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_agents_problems_are_mirrored_bounded() {
        let few = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(mirrored_problems(&few), few);
        let long = "é".repeat(MAX_PROBLEM_CHARS + 10);
        let cut = &mirrored_problems(std::slice::from_ref(&long))[0];
        assert_eq!(cut.chars().count(), MAX_PROBLEM_CHARS + 1);
        assert!(cut.ends_with('…'));
        let many: Vec<String> = (0..1000).map(|i| format!("noise {i}")).collect();
        let out = mirrored_problems(&many);
        assert_eq!(out.len(), MAX_MIRRORED_PROBLEMS + 1);
        assert_eq!(out[0], "noise 0");
        assert_eq!(
            out[MAX_MIRRORED_PROBLEMS],
            "… and 984 more problems in the member's ClusterTrust status"
        );
    }

    use super::*;
    use federator_api::member::{BundleEntry, ClusterTrustStatus, Installed, SignedCa};

    fn t(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn signed(digest: &str, generation: i64, renew: &str) -> SignedCa {
        SignedCa {
            csr_digest: digest.into(),
            generation,
            chain_pem: String::new(),
            serial: "01".into(),
            not_after: fields::time(t("2030-01-01T00:00:00Z")),
            renew_after: fields::parse_time(renew),
        }
    }

    fn ct(gen_: i64, csr: Option<(i64, &str)>, signed_: Option<(&str, i64, &str)>) -> ClusterTrust {
        let mut c = ClusterTrust::new(
            "local",
            ClusterTrustSpec {
                cluster_name: "c1".into(),
                trust_domain: "td".into(),
                csr_generation: gen_,
                signed: signed_.map(|(d, g, renew)| signed(d, g, renew)),
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

    const NOW: &str = "2026-01-01T00:00:00Z";

    /// The plan for member c1 in trust domain td, now.
    fn plan(c: &ClusterTrust, d: &Desired) -> MemberPlan {
        plan_member(c, "c1", "td", d, t(NOW))
    }

    #[test]
    fn signs_a_current_unanswered_csr_only() {
        let d = Desired::default();
        assert!(plan(&ct(1, Some((1, "a")), None), &d).sign.is_some());
        assert!(
            plan(
                &ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z"))),
                &d
            )
            .sign
            .is_none()
        );
        // A stale CSR (older generation) is not signed.
        assert!(
            plan(&ct(2, Some((1, "a")), Some(("a", 1, ""))), &d)
                .sign
                .is_none()
        );
    }

    #[test]
    fn renews_when_due_and_wakes_up_otherwise() {
        // Generation 1 answered; the spec asks for `generation`; renewal point `renew`.
        let signed_once = |generation: i64, renew: &str| {
            plan(
                &ct(generation, Some((1, "a")), Some(("a", 1, renew))),
                &Desired::default(),
            )
        };
        let p = signed_once(1, "2025-12-31T00:00:00Z");
        assert_eq!(p.spec.csr_generation, 2);
        assert_eq!(p.request, Some(CsrRequest::Renewal));
        let p = signed_once(1, "2026-01-02T00:00:00Z");
        assert_eq!(p.spec.csr_generation, 1);
        assert_eq!(p.wake_at, Some(t("2026-01-02T00:00:00Z")));
        assert_eq!(p.request, None);
        // Exactly at the renewal point: renew.
        assert_eq!(signed_once(1, NOW).spec.csr_generation, 2);
        // Already renewing: no second bump.
        let p = signed_once(2, "2025-12-31T00:00:00Z");
        assert_eq!(p.spec.csr_generation, 2);
        assert_eq!(p.request, None);
    }

    #[test]
    fn a_requested_reissue_replaces_the_named_serial_once() {
        let asked = |serial: &str| Desired {
            reissue: [("c1".to_owned(), serial.to_owned())].into(),
            ..Desired::default()
        };
        // The CA signed now is serial 01 (written "01" or "0:1"... any spelling): re-issue it.
        let signed_now = ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z")));
        let p = plan(&signed_now, &asked("0:1"));
        assert_eq!(
            (p.spec.csr_generation, p.request),
            (2, Some(CsrRequest::Reissue))
        );
        let notes = p.notes(&signed_now.spec);
        assert!(
            notes
                .iter()
                .any(|n| n.reason == events::REISSUE_REQUESTED && n.message.contains("01")),
            "{notes:?}"
        );
        // Asked for already (the CSR generation is ahead), or another serial (the member runs
        // on another CA since): nothing.
        let renewing = ct(2, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z")));
        assert_eq!(plan(&renewing, &asked("01")).request, None);
        assert_eq!(plan(&signed_now, &asked("02")).request, None);
        assert!(!same_serial("", ""), "no serial matches nothing");
        // Another member's request is not this one's.
        let other = Desired {
            reissue: [("c2".to_owned(), "01".to_owned())].into(),
            ..Desired::default()
        };
        assert_eq!(plan(&signed_now, &other).request, None);
    }

    #[test]
    fn turning_the_name_constraint_on_or_off_reissues_the_ca_signed_now() {
        use federator_testkit::pki;
        let root = pki::root("td root");
        let chain = |constrained: bool| {
            let (_, pem) = pki::csr("c1", "td");
            let csr = federator_core::csr::CsrInfo::parse(pem.as_bytes()).unwrap();
            let policy = if constrained {
                pki::constrained_policy()
            } else {
                federator_core::policy::SigningPolicy::default()
            };
            pki::sign_with(&policy, &root, &csr, "c1", "td").chain_pem
        };
        let on = Desired {
            constrain_to_trust_domain: true,
            ..Desired::default()
        };
        let off = Desired::default();
        for (signed_constrained, desired, reissue) in [
            (false, &on, true),
            (true, &off, true),
            (true, &on, false),
            (false, &off, false),
        ] {
            let mut c = ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z")));
            if let Some(s) = c.spec.signed.as_mut() {
                s.chain_pem = chain(signed_constrained);
            }
            let p = plan(&c, desired);
            let expected = reissue.then_some(CsrRequest::PolicyChanged);
            assert_eq!(p.request, expected, "signed {signed_constrained}");
            assert_eq!(p.spec.csr_generation, if reissue { 2 } else { 1 });
            if reissue {
                let notes = p.notes(&c.spec);
                let turned = if desired.constrain_to_trust_domain {
                    "on"
                } else {
                    "off"
                };
                assert!(
                    notes.iter().any(|n| n
                        .message
                        .contains(&format!("name constraint was turned {turned}"))),
                    "{notes:?}"
                );
            }
            // Already re-issuing (the generation is ahead): no second bump.
            let mut ahead = c.clone();
            ahead.spec.csr_generation = 2;
            assert_eq!(plan(&ahead, desired).request, None);
        }
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
        let p = plan(&c, &d);
        assert_eq!(p.notes(&c.spec).len(), 1, "the first bundle is news");
        c.spec = p.spec.clone();
        let again = plan(&c, &d);
        assert_eq!(again.spec, c.spec);
        assert!(again.notes(&c.spec).is_empty(), "nothing new, no event");
    }

    #[test]
    fn a_trust_domain_change_starts_over() {
        let d = Desired::default();
        let c = ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z")));
        let p = plan_member(&c, "c1", "other.td", &d, t(NOW));
        assert_eq!(p.spec.signed, None);
        assert_eq!(p.spec.csr_generation, 2);
        assert_eq!(p.request, Some(CsrRequest::TrustDomainChanged));
        assert!(p.sign.is_none(), "the old CSR is for the old trust domain");
        let notes = p.notes(&c.spec);
        assert!(
            notes[0].message.contains("other.td"),
            "{:?}",
            notes[0].message
        );
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
        let p = plan(&c, &d);
        assert_eq!(p.spec.csr_generation, 2, "old root: renew now");
        assert_eq!(p.request, Some(CsrRequest::ReSign));
        assert_eq!(p.notes(&c.spec)[0].reason, events::RE_SIGN_REQUESTED);
        d.signing_roots.insert("td".into(), root_fp);
        assert_eq!(
            plan(&c, &d).spec.csr_generation,
            1,
            "already on the new root"
        );
        d.resign.clear();
        d.signing_roots.insert("td".into(), "another-root".into());
        assert_eq!(plan(&c, &d).spec.csr_generation, 1, "not re-signing yet");
    }

    #[test]
    fn status_only_changes_when_something_changed() {
        let mut c = ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z")));
        c.spec.bundle_generation = 2;
        c.status.as_mut().unwrap().installed = Some(Installed {
            serial: "01".into(),
            sha256: String::new(),
            not_after: fields::time(t("2030-01-01T00:00:00Z")),
            bundle_generation: 2,
            csr_generation: 1,
        });
        let inp = |now: &str| StatusInputs {
            ct: Some(&c),
            reachable: true,
            hub_problems: &[],
            bundle_generation: 2,
            observed_generation: Some(1),
            now: t(now),
            heartbeat: std::time::Duration::from_secs(300),
        };
        let s1 = member_status(None, &inp(NOW));
        assert!(condition::is_true(&s1.conditions, "Ready"), "{s1:?}");
        assert_eq!(s1.conditions[0].observed_generation, Some(1));
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
        // A problem the hub found makes the member not Ready, and says why.
        let problem = ["CSR generation 2 not signed: refused".to_owned()];
        let refused = StatusInputs {
            hub_problems: &problem,
            ..inp("2026-01-01T00:01:00Z")
        };
        let s5 = member_status(Some(&s1), &refused);
        let ready = condition::find(&s5.conditions, "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("not signed"), "{ready:?}");
    }

    #[test]
    fn the_bundle_counts_once_istiod_publishes_it() {
        use federator_api::member::{IstiodState, IstiodStatus};
        let mut c = ct(1, Some((1, "a")), Some(("a", 1, "2027-01-01T00:00:00Z")));
        c.spec.bundle_generation = 3;
        let status = c.status.as_mut().unwrap();
        status.installed = Some(Installed {
            serial: "01".into(),
            sha256: String::new(),
            not_after: fields::time(t("2030-01-01T00:00:00Z")),
            bundle_generation: 3,
            csr_generation: 1,
        });
        let istiod = |published: Option<i64>| IstiodStatus {
            state: IstiodState::Restarted,
            multi_root: true,
            version: federator_core::istiod::IstiodVersion::parse("1.27.9"),
            published_bundle_generation: published,
            message: "restart requested: root-cert.pem changed".into(),
            warnings: Vec::new(),
        };
        let status_with = |published: Option<i64>, installed: i64| {
            let mut c = c.clone();
            let s = c.status.as_mut().unwrap();
            s.istiod = Some(istiod(published));
            s.installed.as_mut().unwrap().bundle_generation = installed;
            member_status(
                None,
                &StatusInputs {
                    ct: Some(&c),
                    reachable: true,
                    hub_problems: &[],
                    bundle_generation: 3,
                    observed_generation: Some(1),
                    now: t(NOW),
                    heartbeat: std::time::Duration::from_secs(300),
                },
            )
        };
        // cacerts holds generation 3, istiod publishes 2: acknowledged up to 2, and why.
        let behind = status_with(Some(2), 3);
        assert_eq!(behind.bundle_generation_acknowledged, 2);
        assert_eq!(
            behind.istiod_version.as_ref().map(ToString::to_string),
            Some("1.27.9".to_owned())
        );
        let c = condition::find(&behind.conditions, types::BUNDLE_ACKNOWLEDGED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reasons::ISTIOD_BEHIND)
        );
        assert_eq!(
            c.message,
            "cacerts holds bundle generation 3 but istiod 1.27.9 publishes generation 2: restart requested: root-cert.pem changed"
        );
        assert!(!condition::is_true(&behind.conditions, types::READY));
        // istiod publishes it: current and ready.
        let current = status_with(Some(3), 3);
        assert_eq!(current.bundle_generation_acknowledged, 3);
        assert!(condition::is_true(&current.conditions, types::READY));
        // cacerts itself behind: the plain reason, whatever istiod publishes.
        let old = status_with(Some(2), 2);
        let c = condition::find(&old.conditions, types::BUNDLE_ACKNOWLEDGED).unwrap();
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            (reasons::BEHIND, "")
        );
        // What istiod publishes unknown (no istiod, or the agent cannot read it): cacerts alone.
        let unknown = status_with(None, 3);
        assert_eq!(unknown.bundle_generation_acknowledged, 3);
        assert!(condition::is_true(&unknown.conditions, types::READY));
    }
}
