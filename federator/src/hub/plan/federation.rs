//! Pure decisions for the whole federation: which trust domains are in use, the bundle and
//! its generation, where each root rotation stands, the Federation's status, and what every
//! member must be told ([`Desired`]). The federation controller reads, calls [`plan`], and
//! writes what it returns.
//!
//! Federation-wide inputs enter through [`Inputs`]: the members, the Federation object, what
//! the signer holds ([`SignerView`]) and the foreign SPIFFE trust domains (their last good
//! roots go to every member: [`Desired::foreign`], and into the bundle when trusted mesh-wide).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use federator_api::condition::{self, reasons, types};
use federator_api::events::{Note, reasons as events};
use federator_api::fields;
use federator_api::foreign::ForeignTrustDomain;
use federator_api::hub::{
    FederationSpec, FederationStatus, MemberCluster, RootStatus, RootType, RotationPhase,
    RotationStatus, RotationWait, WaitReason,
};
use federator_api::member::BundleEntry;
use federator_api::names;
use federator_core::bundle::TrustBundle;
use federator_core::cert::{CertInfo, fingerprint};
use federator_core::identity::TrustDomain;
use kube::ResourceExt;
use time::OffsetDateTime;

use super::rotation::{self, MemberAck, Record, RotationState, Scope};

/// What the signer holds for one trust domain: the root that signs and, during a rotation,
/// the previous root (DER), which stays in the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    /// The root that anchors the trust domain's cluster CAs from now on.
    pub root: Vec<u8>,
    /// The previous root, while rotating.
    pub previous: Option<Vec<u8>>,
    /// Whether the signer can still sign under the previous root (it holds its key, or its
    /// Vault issuer), which it does until every member trusts the new one.
    pub previous_signs: bool,
}

/// What the signer holds: the roots of the trust domains in use, and every rotation in
/// progress (also of trust domains no member uses any more, so that they finish).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignerView {
    /// Per trust domain in use.
    pub roots: BTreeMap<TrustDomain, Holding>,
    /// Rotations in progress: a trust domain's (`local`), or the one issuer's (`import`,
    /// `vault`).
    pub rotations: BTreeMap<Scope, RotationState>,
}

/// What every member must currently be told.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// The bundle, per trust domain.
    pub bundle: Vec<BundleEntry>,
    /// Its generation (0: the federation was not planned yet); it also moves when the foreign
    /// roots change.
    pub bundle_generation: i64,
    /// The last good roots of every foreign trust domain (for the mesh config).
    pub foreign: Vec<BundleEntry>,
    /// Key algorithm for cluster CA keys.
    pub key_algorithm: String,
    /// Renewal point, percent of lifetime.
    pub renew_at_percent: u8,
    /// Lifetime of a cluster CA.
    pub cluster_ca_ttl: Duration,
    /// The root that signs, per trust domain (SHA-256): while a rotation waits for every
    /// member to trust its new root, the previous root (if the signer still holds it), so
    /// that a member joining or renewing then gets a CA every peer trusts.
    pub signing_roots: BTreeMap<String, String>,
    /// The root the bundle endpoint's X509-SVID (`https_spiffe`) is issued under, per trust
    /// domain (SHA-256): the previous root for as long as a rotation still publishes it (if
    /// the signer holds it), since peers authenticate the endpoint with the bundle they last
    /// fetched; the current root otherwise.
    pub endpoint_roots: BTreeMap<String, String>,
    /// Trust domains whose members must move to their new root now (a rotation whose new
    /// root every member already trusts).
    pub resign: BTreeSet<String>,
    /// Members whose cluster CA an operator asked to re-issue: the serial to replace
    /// (`federator renew cluster`, the `MemberCluster`'s `federator.io/reissue-serial`).
    pub reissue: BTreeMap<String, String>,
    /// Bind cluster CAs to their trust domain with a URI name constraint (the spec's
    /// `constrainToTrustDomain`, in effect with the `local` and `import` backends only).
    pub constrain_to_trust_domain: bool,
}

/// Why `spec.constrainToTrustDomain` is not in effect with the `vault` backend.
pub const VAULT_CONSTRAINT_IGNORED: &str = "spec.constrainToTrustDomain is not in effect: with the vault backend Vault signs the cluster CAs and its PKI cannot add a URI name constraint; set it to false, or use the local or import backend";

/// The trust domains of the members, sorted, each once (invalid ones are skipped: `join`
/// validates them, so only a hand-made object has one).
pub fn trust_domains(members: &[Arc<MemberCluster>]) -> Vec<TrustDomain> {
    let set: BTreeSet<TrustDomain> = members
        .iter()
        .filter_map(|m| TrustDomain::new(&m.spec.trust_domain).ok())
        .collect();
    set.into_iter().collect()
}

/// The bundle: every trust domain's root, and its previous root while rotating.
pub fn bundle(roots: &BTreeMap<TrustDomain, Holding>) -> federator_core::Result<TrustBundle> {
    let mut bundle = TrustBundle::new();
    for (td, holding) in roots {
        bundle.add(td, holding.root.clone())?;
        if let Some(previous) = &holding.previous {
            bundle.add(td, previous.clone())?;
        }
    }
    Ok(bundle)
}

/// What [`plan`] reads.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The Federation's spec.
    pub spec: &'a FederationSpec,
    /// Its current status.
    pub previous: Option<&'a FederationStatus>,
    /// Its `metadata.generation`.
    pub generation: Option<i64>,
    /// The members.
    pub members: &'a [Arc<MemberCluster>],
    /// What the signer holds.
    pub signer: &'a SignerView,
    /// The foreign trust domains.
    pub foreign: &'a [Arc<ForeignTrustDomain>],
    /// The shortest drain of any rotation: with a SPIFFE bundle endpoint, several of its
    /// refresh hints, so that every peer polling at the hint learns the new root before the
    /// old one leaves (SPIFFE Federation §4.1); zero without one.
    pub min_drain: Duration,
    /// Now.
    pub now: OffsetDateTime,
}

/// What the federation controller must do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The Federation's status (write it when it differs).
    pub status: FederationStatus,
    /// What every member must be told.
    pub desired: Desired,
    /// What to record in the signer's store, per rotation.
    pub records: Vec<(Scope, Record)>,
    /// When to plan again even if nothing changes (a drain deadline).
    pub wake_at: Option<OffsetDateTime>,
    /// Events for the Federation.
    pub notes: Vec<Note>,
}

/// Plans the federation.
pub fn plan(inp: &Inputs<'_>) -> federator_core::Result<Plan> {
    let previous = inp.previous.cloned().unwrap_or_default();
    let bundle = bundle(&inp.signer.roots)?;
    // Foreign domains never shadow one of the federation's own.
    let (foreign, mesh_wide) = super::foreign::distribution(inp.foreign);
    let own = |e: &BundleEntry| {
        bundle
            .trust_domains()
            .any(|td| td.as_str() == e.trust_domain)
    };
    let foreign: Vec<BundleEntry> = foreign.into_iter().filter(|e| !own(e)).collect();
    let mesh_wide: Vec<BundleEntry> = mesh_wide.into_iter().filter(|e| !own(e)).collect();
    let digest = if foreign.is_empty() {
        bundle.digest()
    } else {
        let mut text = bundle.digest();
        for e in &foreign {
            let wide = mesh_wide.iter().any(|w| w.trust_domain == e.trust_domain);
            text.push_str(&format!("\n{} {wide}\n{}", e.trust_domain, e.roots_pem));
        }
        fingerprint(text.as_bytes())
    };
    let bundle_generation = if previous.bundle_digest == digest {
        previous.bundle_generation.max(1)
    } else {
        previous.bundle_generation + 1
    };
    let mut notes = Vec::new();
    if bundle_generation != previous.bundle_generation {
        let tds: Vec<String> = bundle.trust_domains().map(ToString::to_string).collect();
        notes.push(Note::normal(
            events::BUNDLE_CHANGED,
            "Bundle",
            format!(
                "bundle generation {bundle_generation}: {} root(s) of {}",
                bundle.roots().len(),
                if tds.is_empty() {
                    "no trust domain".to_owned()
                } else {
                    tds.join(", ")
                }
            ),
        ));
    }

    let acks: Vec<MemberAck> = inp.members.iter().map(|m| ack(m)).collect();
    let mut rotations = Vec::new();
    let mut records = Vec::new();
    let mut resign = BTreeSet::new();
    // Rotations whose new root not every member trusts yet: the previous root still signs.
    let mut not_trusted_yet = Vec::new();
    // Rotations that still publish their previous root (not aborted: an aborted rotation's
    // previous root is the abandoned new one).
    let mut publishing_previous = Vec::new();
    let mut wake_at: Option<OffsetDateTime> = None;
    for (scope, state) in &inp.signer.rotations {
        let state = &RotationState {
            drain: state.drain.max(inp.min_drain),
            ..state.clone()
        };
        let step = rotation::step(scope, state, &acks, bundle_generation, inp.now);
        // An aborted rotation's new root is the original one, which every member trusts.
        if step.phase == Some(RotationPhase::TrustingNewRoot) && !state.aborted {
            not_trusted_yet.push(scope.clone());
        }
        if step.phase.is_some() && !state.aborted {
            publishing_previous.push(scope.clone());
        }
        if let Some(record) = step.record {
            records.push((scope.clone(), record));
        }
        if step.resign {
            match scope {
                Scope::TrustDomain(td) => {
                    resign.insert(td.to_string());
                }
                Scope::Issuer => resign.extend(inp.signer.roots.keys().map(ToString::to_string)),
            }
        }
        if let Some(w) = step.wake_at {
            wake_at = Some(wake_at.map_or(w, |x| x.min(w)));
        }
        let shown = scope.to_string();
        let before = previous.rotations.iter().find(|r| r.trust_domain == shown);
        match step.phase {
            Some(phase) => {
                if before.map(|r| (r.phase, r.aborted)) != Some((phase, state.aborted)) {
                    notes.push(phase_note(scope, state, phase, step.removes_old_root_at));
                }
                notes.extend(istiod_wait_notes(scope, phase, &step.waiting_for, before));
                rotations.push(RotationStatus {
                    trust_domain: shown,
                    phase,
                    previous_sha256: state.previous_root_sha256.clone(),
                    sha256: state.new_root_sha256.clone(),
                    removes_old_root_at: step.removes_old_root_at.map(fields::time),
                    // An abort starts its phase afresh.
                    phase_since: Some(fields::time(rotation::phase_since(
                        before.filter(|b| b.aborted == state.aborted),
                        phase,
                        state,
                        inp.now,
                    ))),
                    waiting_for: step.waiting_for,
                    aborted: state.aborted,
                });
            }
            None => notes.push(Note::normal(
                events::ROTATION_FINISHED,
                "RotateRoot",
                format!(
                    "{}: the {} root (sha256 {}) leaves every bundle",
                    scope_name(scope),
                    if state.aborted {
                        "abandoned new"
                    } else {
                        "previous"
                    },
                    state.previous_root_sha256
                ),
            )),
        }
    }

    let roots: Vec<RootStatus> = inp
        .signer
        .roots
        .iter()
        .filter_map(|(td, h)| {
            let info = CertInfo::from_der(&h.root).ok()?;
            Some(RootStatus {
                trust_domain: td.to_string(),
                sha256: info.sha256,
                subject: info.subject,
                not_after: fields::parse_time(&info.not_after)?,
            })
        })
        .collect();
    let published: Vec<BundleEntry> = bundle
        .trust_domains()
        .map(|td| BundleEntry {
            trust_domain: td.to_string(),
            roots_pem: bundle.domain_pem(td),
        })
        .collect();
    let constraint_ignored =
        inp.spec.constrain_to_trust_domain && inp.spec.root.type_ == RootType::Vault;
    let status = FederationStatus {
        conditions: if constraint_ignored {
            condition::set(
                &previous.conditions,
                types::READY,
                false,
                reasons::INVALID_SPEC,
                VAULT_CONSTRAINT_IGNORED,
                &fields::time(inp.now),
                inp.generation,
            )
        } else {
            condition::set(
                &previous.conditions,
                types::READY,
                true,
                reasons::SYNCED,
                "",
                &fields::time(inp.now),
                inp.generation,
            )
        },
        roots,
        bundle_digest: digest,
        bundle_generation,
        members: i64::try_from(inp.members.len()).unwrap_or(i64::MAX),
        rotations,
        published: published.clone(),
    };
    let mut members_bundle = published;
    members_bundle.extend(mesh_wide);
    let desired = Desired {
        bundle: members_bundle,
        foreign,
        bundle_generation,
        key_algorithm: inp.spec.key_algorithm.to_string(),
        constrain_to_trust_domain: inp.spec.constrain_to_trust_domain && !constraint_ignored,
        renew_at_percent: inp.spec.renew_at_percent,
        cluster_ca_ttl: inp.spec.cluster_ca_ttl.get(),
        signing_roots: signing_under(&inp.signer.roots, &not_trusted_yet),
        endpoint_roots: signing_under(&inp.signer.roots, &publishing_previous),
        resign,
        reissue: inp
            .members
            .iter()
            .filter_map(|m| {
                let serial = m.annotations().get(names::REISSUE_ANNOTATION)?;
                Some((m.name_any(), serial.clone()))
            })
            .collect(),
    };
    Ok(Plan {
        status,
        desired,
        records,
        wake_at,
        notes,
    })
}

/// Per trust domain (SHA-256): its previous root where one of `previous_for` covers it and the
/// signer still signs under it, else its current root.
fn signing_under(
    roots: &BTreeMap<TrustDomain, Holding>,
    previous_for: &[Scope],
) -> BTreeMap<String, String> {
    roots
        .iter()
        .map(|(td, h)| {
            let signs = match &h.previous {
                Some(previous)
                    if h.previous_signs && previous_for.iter().any(|s| s.covers(td.as_str())) =>
                {
                    previous
                }
                _ => &h.root,
            };
            (td.to_string(), fingerprint(signs))
        })
        .collect()
}

fn ack(m: &MemberCluster) -> MemberAck {
    let s = m.status.clone().unwrap_or_default();
    let istiod_behind = condition::find(&s.conditions, types::BUNDLE_ACKNOWLEDGED)
        .filter(|c| c.status == condition::FALSE && c.reason == reasons::ISTIOD_BEHIND)
        .map(|c| c.message.clone());
    MemberAck {
        name: m.name_any(),
        trust_domain: m.spec.trust_domain.clone(),
        bundle_generation: s.bundle_generation_acknowledged,
        istiod_behind,
        installed: condition::is_true(&s.conditions, types::INSTALLED),
        root_sha256: s.ca_root_sha256,
    }
}

/// An event for each member whose istiod the rotation now waits for and did not before, or
/// for another reason than before (`before`: the rotation as the Federation's status last
/// showed it). The first report of a stopped istiod may not know its version yet; the one
/// that does is news to the operator, the same one again is not.
fn istiod_wait_notes(
    scope: &Scope,
    phase: RotationPhase,
    waiting_for: &[RotationWait],
    before: Option<&RotationStatus>,
) -> Vec<Note> {
    let said_before = |now: &RotationWait| {
        before.is_some_and(|r| {
            r.waiting_for.iter().any(|w| {
                w.member == now.member && w.reason == now.reason && w.message == now.message
            })
        })
    };
    waiting_for
        .iter()
        .filter(|w| w.reason == WaitReason::IstiodBehind && !said_before(w))
        .map(|w| {
            Note::normal(
                events::ROTATION_WAITS_FOR_ISTIOD,
                "RotateRoot",
                format!(
                    "{}: {phase} waits for the istiod of {}: {}",
                    scope_name(scope),
                    w.member,
                    w.message
                ),
            )
        })
        .collect()
}

/// How a rotation is named in events: `trust domain TD`, or `the issuer of every trust domain`.
fn scope_name(scope: &Scope) -> String {
    match scope {
        Scope::TrustDomain(td) => format!("trust domain {td}"),
        Scope::Issuer => "the issuer of every trust domain".to_owned(),
    }
}

fn phase_note(
    scope: &Scope,
    state: &RotationState,
    phase: RotationPhase,
    removes_at: Option<OffsetDateTime>,
) -> Note {
    let (new, old) = if state.aborted {
        ("the original root", "the abandoned new root")
    } else {
        ("the new root", "the previous root")
    };
    let what = match phase {
        RotationPhase::TrustingNewRoot => {
            "every member installs the bundle with both roots".to_owned()
        }
        RotationPhase::ReSigning => format!("its members are renewed under {new}"),
        RotationPhase::Draining => format!(
            "every member runs on {new}; {old} stays trusted until {}",
            removes_at
                .map(federator_core::cert::rfc3339)
                .unwrap_or_default()
        ),
    };
    Note::normal(
        events::ROTATION_PHASE,
        "RotateRoot",
        format!(
            "{}: {}{phase}: {what}",
            scope_name(scope),
            if state.aborted { "aborted, " } else { "" }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_api::hub::{MemberClusterSpec, MemberClusterStatus};
    use federator_testkit::pki;

    fn t(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn member(name: &str, td: &str, acked: i64, root: &str, installed: bool) -> Arc<MemberCluster> {
        let mut m = MemberCluster::new(
            name,
            MemberClusterSpec {
                trust_domain: td.into(),
                credential_secret: format!("federator-member-{name}"),
                ..MemberClusterSpec::default()
            },
        );
        m.status = Some(MemberClusterStatus {
            bundle_generation_acknowledged: acked,
            ca_root_sha256: root.into(),
            conditions: condition::set(
                &[],
                types::INSTALLED,
                installed,
                "x",
                "",
                &fields::time(t(NOW)),
                None,
            ),
            ..MemberClusterStatus::default()
        });
        Arc::new(m)
    }

    fn spec() -> FederationSpec {
        FederationSpec {
            cluster_ca_ttl: Duration::from_secs(3600).into(),
            renew_at_percent: 66,
            ..FederationSpec::default()
        }
    }

    fn view(roots: &[(&str, &federator_core::ca::IssuingCa)]) -> SignerView {
        SignerView {
            roots: roots
                .iter()
                .map(|(td, ca)| {
                    (
                        pki::td(td),
                        Holding {
                            root: ca.root_der().to_vec(),
                            previous: None,
                            previous_signs: false,
                        },
                    )
                })
                .collect(),
            rotations: BTreeMap::new(),
        }
    }

    /// A signer rotating `a.local` from `old` to `new`, not re-signed yet.
    fn rotating(
        old: &federator_core::ca::IssuingCa,
        new: &federator_core::ca::IssuingCa,
    ) -> (SignerView, RotationState) {
        let state = RotationState {
            new_root_sha256: fingerprint(new.root_der()),
            previous_root_sha256: fingerprint(old.root_der()),
            drain: Duration::from_secs(60),
            resigned_at: None,
            aborted: false,
        };
        let mut signer = SignerView::default();
        signer.roots.insert(
            pki::td("a.local"),
            Holding {
                root: new.root_der().to_vec(),
                previous: Some(old.root_der().to_vec()),
                previous_signs: true,
            },
        );
        signer
            .rotations
            .insert(Scope::TrustDomain(pki::td("a.local")), state.clone());
        (signer, state)
    }

    #[test]
    fn the_name_constraint_is_in_effect_except_with_vault() {
        let a = pki::root("a");
        let members = [member("c1", "a.local", 0, "", false)];
        let signer = view(&[("a.local", &a)]);
        let planned = |type_: RootType, constrain: bool| {
            let mut spec = spec();
            spec.root.type_ = type_;
            spec.constrain_to_trust_domain = constrain;
            plan(&Inputs {
                spec: &spec,
                previous: None,
                generation: Some(1),
                members: &members,
                signer: &signer,
                foreign: &[],
                min_drain: Duration::ZERO,
                now: t(NOW),
            })
            .unwrap()
        };
        for type_ in [RootType::Local, RootType::Import] {
            let p = planned(type_, true);
            assert!(p.desired.constrain_to_trust_domain);
            assert!(condition::is_true(&p.status.conditions, types::READY));
            assert!(!planned(type_, false).desired.constrain_to_trust_domain);
        }
        // With Vault: not in effect, and the Federation says why and what to do.
        let p = planned(RootType::Vault, true);
        assert!(!p.desired.constrain_to_trust_domain);
        let ready = condition::find(&p.status.conditions, types::READY).unwrap();
        assert_eq!(ready.status, condition::FALSE);
        assert_eq!(ready.reason, reasons::INVALID_SPEC);
        assert_eq!(ready.message, VAULT_CONSTRAINT_IGNORED);
        assert!(condition::is_true(
            &planned(RootType::Vault, false).status.conditions,
            types::READY
        ));
    }

    #[test]
    fn trust_domains_are_sorted_unique_and_valid() {
        let members = [
            member("c2", "b.local", 0, "", false),
            member("c1", "a.local", 0, "", false),
            member("c3", "a.local", 0, "", false),
            member("c4", "Not Valid", 0, "", false),
        ];
        let tds: Vec<String> = trust_domains(&members)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(tds, ["a.local", "b.local"]);
    }

    #[test]
    fn the_generation_moves_only_when_the_bundle_changes() {
        let (a, b) = (pki::root("a"), pki::root("b"));
        let members = [member("c1", "a.local", 0, "", false)];
        let spec = spec();
        let one = view(&[("a.local", &a)]);
        let inp = |signer, previous| Inputs {
            spec: &spec,
            previous,
            generation: Some(1),
            members: &members,
            signer,
            foreign: &[],
            min_drain: Duration::ZERO,
            now: t(NOW),
        };
        let first = plan(&inp(&one, None)).unwrap();
        assert_eq!(first.status.bundle_generation, 1);
        assert_eq!(first.desired.bundle_generation, 1);
        assert_eq!(first.notes[0].reason, events::BUNDLE_CHANGED);
        assert!(condition::is_true(&first.status.conditions, types::READY));
        let again = plan(&inp(&one, Some(&first.status))).unwrap();
        assert_eq!(again.status, first.status, "no change, no write");
        assert!(again.notes.is_empty());
        let two = view(&[("a.local", &a), ("b.local", &b)]);
        let grown = plan(&inp(&two, Some(&first.status))).unwrap();
        assert_eq!(grown.status.bundle_generation, 2);
        assert_eq!(grown.desired.bundle.len(), 2);
        assert_eq!(grown.status.roots.len(), 2);
        assert_eq!(
            grown.desired.signing_roots["b.local"],
            fingerprint(b.root_der())
        );
        assert_eq!(grown.desired.cluster_ca_ttl, Duration::from_secs(3600));
        assert_eq!(grown.desired.key_algorithm, "ecdsa-p256");
    }

    #[test]
    fn a_rotation_keeps_both_roots_and_reports_its_phase() {
        let (old, new) = (pki::root("old"), pki::root("new"));
        let spec = spec();
        let (mut signer, state) = rotating(&old, &new);
        // A rotation of a trust domain no member uses any more still moves on.
        signer
            .rotations
            .insert(Scope::TrustDomain(pki::td("gone.local")), state.clone());
        // c1 in a.local, running under the old root, having installed bundle `acked`.
        let c1 = |acked| {
            [member(
                "c1",
                "a.local",
                acked,
                &state.previous_root_sha256,
                true,
            )]
        };
        let plan_after = |members: &[Arc<MemberCluster>], previous: Option<&FederationStatus>| {
            plan(&Inputs {
                spec: &spec,
                previous,
                generation: None,
                members,
                signer: &signer,
                foreign: &[],
                min_drain: Duration::ZERO,
                now: t(NOW),
            })
            .unwrap()
        };
        let p = plan_after(&c1(0), None);
        assert_eq!(p.desired.bundle[0].roots_pem.matches("BEGIN").count(), 2);
        // c1 has not installed the bundle with both roots: every rotation waits for it, also
        // the one of a trust domain it is not in.
        let phases: Vec<_> = p
            .status
            .rotations
            .iter()
            .map(|r| (r.trust_domain.as_str(), r.phase))
            .collect();
        assert_eq!(
            phases,
            [
                ("a.local", RotationPhase::TrustingNewRoot),
                ("gone.local", RotationPhase::TrustingNewRoot)
            ]
        );
        assert!(p.records.is_empty() && p.desired.resign.is_empty() && p.wake_at.is_none());
        assert_eq!(
            p.desired.signing_roots["a.local"], state.previous_root_sha256,
            "until every member trusts the new root, the old one signs (a member joining or renewing now)"
        );
        assert_eq!(
            p.desired.endpoint_roots["a.local"], state.previous_root_sha256,
            "the bundle endpoint's SVID stays under the root every peer holds"
        );
        assert_eq!(
            p.status.rotations[0].phase_since,
            Some(fields::time(t(NOW))),
            "the first phase starts now"
        );
        let phase_notes = |p: &Plan| {
            p.notes
                .iter()
                .filter(|n| n.reason == events::ROTATION_PHASE)
                .count()
        };
        assert_eq!(phase_notes(&p), 2);
        // Next time, with c1 trusting both roots: its trust domain is re-signed, and the one
        // without members moves straight on to draining.
        let again = plan_after(&c1(1), Some(&p.status));
        assert_eq!(again.status.rotations[0].phase, RotationPhase::ReSigning);
        assert_eq!(again.status.rotations[1].phase, RotationPhase::Draining);
        assert_eq!(
            again.status.rotations[1].removes_old_root_at,
            Some(fields::time(t("2026-01-01T00:01:00Z")))
        );
        assert!(again.desired.resign.contains("a.local"));
        assert_eq!(
            again.desired.signing_roots["a.local"], state.new_root_sha256,
            "trusted by all: the new root signs"
        );
        assert_eq!(
            again.desired.endpoint_roots["a.local"], state.previous_root_sha256,
            "while the old root is published, the bundle endpoint's SVID stays under it"
        );
        assert_eq!(
            again.records,
            vec![(
                Scope::TrustDomain(pki::td("gone.local")),
                Record::Resigned { at: t(NOW) }
            )]
        );
        assert_eq!(again.wake_at, Some(t("2026-01-01T00:01:00Z")));
        assert_eq!(phase_notes(&again), 2);
        // Nothing new: no new event.
        let third = plan_after(&c1(1), Some(&again.status));
        assert_eq!(phase_notes(&third), 0);
        // With a bundle endpoint whose peers poll every 2 minutes, the 60 s drain is stretched
        // to the plan's minimum (several refresh hints): peers learn the new root first.
        let stretched = plan(&Inputs {
            spec: &spec,
            previous: Some(&p.status),
            generation: None,
            members: &c1(1),
            signer: &signer,
            foreign: &[],
            min_drain: Duration::from_secs(360),
            now: t(NOW),
        })
        .unwrap();
        assert_eq!(
            stretched.status.rotations[1].removes_old_root_at,
            Some(fields::time(t("2026-01-01T00:06:00Z")))
        );
        assert_eq!(stretched.wake_at, Some(t("2026-01-01T00:06:00Z")));
    }

    #[test]
    fn the_previous_root_signs_only_while_not_every_member_trusts_the_new_one() {
        let (old, new) = (pki::root("old"), pki::root("new"));
        let spec = spec();
        let (mut signer, state) = rotating(&old, &new);
        // c1 has not installed the bundle with both roots yet.
        let members = [member(
            "c1",
            "a.local",
            0,
            &state.previous_root_sha256,
            true,
        )];
        let signing = |signer: &SignerView| {
            let p = plan(&Inputs {
                spec: &spec,
                previous: None,
                generation: None,
                members: &members,
                signer,
                foreign: &[],
                min_drain: Duration::ZERO,
                now: t(NOW),
            })
            .unwrap();
            assert_eq!(p.status.rotations[0].phase, RotationPhase::TrustingNewRoot);
            assert_eq!(
                p.desired.endpoint_roots["a.local"], p.desired.signing_roots["a.local"],
                "in the first phase the bundle endpoint signs under the same root"
            );
            p.desired.signing_roots["a.local"].clone()
        };
        assert_eq!(signing(&signer), fingerprint(old.root_der()));
        // A signer without the previous root's key (a rotation an earlier federator started)
        // can only sign under the new root.
        let h = signer.roots.get_mut(&pki::td("a.local")).unwrap();
        h.previous_signs = false;
        assert_eq!(signing(&signer), fingerprint(new.root_der()));
        // Aborted: its "new" root is the original one, which every member trusts, and signs.
        signer.roots.insert(
            pki::td("a.local"),
            Holding {
                root: old.root_der().to_vec(),
                previous: Some(new.root_der().to_vec()),
                previous_signs: true,
            },
        );
        signer.rotations.insert(
            Scope::TrustDomain(pki::td("a.local")),
            RotationState {
                new_root_sha256: state.previous_root_sha256.clone(),
                previous_root_sha256: state.new_root_sha256.clone(),
                aborted: true,
                ..state
            },
        );
        assert_eq!(signing(&signer), fingerprint(old.root_der()));
    }

    #[test]
    fn the_one_issuer_rotates_every_trust_domain_at_once_and_aborts() {
        let (old, new) = (pki::root("old"), pki::root("new"));
        let spec = spec();
        let mut state = RotationState {
            new_root_sha256: fingerprint(new.root_der()),
            previous_root_sha256: fingerprint(old.root_der()),
            drain: Duration::from_secs(60),
            resigned_at: None,
            aborted: false,
        };
        let holding = Holding {
            root: new.root_der().to_vec(),
            previous: Some(old.root_der().to_vec()),
            previous_signs: true,
        };
        let mut signer = SignerView::default();
        for td in ["a.local", "b.local"] {
            signer.roots.insert(pki::td(td), holding.clone());
        }
        signer.rotations.insert(Scope::Issuer, state.clone());
        let old_fp = state.previous_root_sha256.clone();
        // Both members trust the bundle with both roots (generation 1), both on the old root.
        let members = [
            member("c1", "a.local", 1, &old_fp, true),
            member("c2", "b.local", 1, &old_fp, true),
        ];
        let plan_with = |signer: &SignerView, previous: Option<&FederationStatus>| {
            plan(&Inputs {
                spec: &spec,
                previous,
                generation: None,
                members: &members,
                signer,
                foreign: &[],
                min_drain: Duration::ZERO,
                now: t(NOW),
            })
            .unwrap()
        };
        let p = plan_with(&signer, None);
        let r = &p.status.rotations[0];
        assert_eq!(
            (r.trust_domain.as_str(), r.phase),
            ("*", RotationPhase::ReSigning)
        );
        assert_eq!(
            r.waiting_for
                .iter()
                .map(|w| w.member.as_str())
                .collect::<Vec<_>>(),
            ["c1", "c2"],
            "every member, whatever its trust domain"
        );
        assert_eq!(
            p.desired
                .resign
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["a.local", "b.local"]
        );
        assert_eq!(p.desired.bundle[0].roots_pem.matches("BEGIN").count(), 2);
        assert!(
            p.notes
                .iter()
                .any(|n| n.message.contains("the issuer of every trust domain"))
        );
        // Aborted: the old root signs again; nobody moved yet, so it drains at once and its
        // phase starts afresh, with the event saying so.
        state = RotationState {
            new_root_sha256: state.previous_root_sha256.clone(),
            previous_root_sha256: state.new_root_sha256.clone(),
            aborted: true,
            ..state
        };
        signer.rotations.insert(Scope::Issuer, state);
        for h in signer.roots.values_mut() {
            *h = Holding {
                root: old.root_der().to_vec(),
                previous: Some(new.root_der().to_vec()),
                previous_signs: true,
            };
        }
        let back = plan_with(&signer, Some(&p.status));
        let r = &back.status.rotations[0];
        assert!(r.aborted);
        assert_eq!(r.phase, RotationPhase::Draining);
        assert_eq!(
            back.status.bundle_generation, p.status.bundle_generation,
            "same roots"
        );
        assert_eq!(
            back.records,
            vec![(Scope::Issuer, Record::Resigned { at: t(NOW) })]
        );
        assert!(
            back.notes
                .iter()
                .any(|n| n.reason == events::ROTATION_PHASE && n.message.contains("aborted")),
            "{:?}",
            back.notes
        );
    }

    #[test]
    fn a_rotation_names_the_istiod_it_waits_for_and_says_so_once() {
        let (old, new) = (pki::root("old"), pki::root("new"));
        let spec = spec();
        let (signer, _) = rotating(&old, &new);
        // c1's cacerts holds the bundle with both roots (generation 1), its istiod does not
        // publish it: the member controller said so in BundleAcknowledged.
        let why = "cacerts holds bundle generation 1 but istiod 1.27.9 publishes generation 0: restart requested";
        let behind = {
            let mut m = (*member("c1", "a.local", 0, "", true)).clone();
            let s = m.status.as_mut().unwrap();
            s.conditions = condition::set(
                &s.conditions,
                types::BUNDLE_ACKNOWLEDGED,
                false,
                reasons::ISTIOD_BEHIND,
                why,
                &fields::time(t(NOW)),
                None,
            );
            Arc::new(m)
        };
        let members = [behind, member("c2", "a.local", 0, "", true)];
        let plan_after = |previous: Option<&FederationStatus>| {
            plan(&Inputs {
                spec: &spec,
                previous,
                generation: None,
                members: &members,
                signer: &signer,
                foreign: &[],
                min_drain: Duration::ZERO,
                now: t(NOW),
            })
            .unwrap()
        };
        let p = plan_after(None);
        let r = &p.status.rotations[0];
        assert_eq!(r.phase, RotationPhase::TrustingNewRoot);
        assert_eq!(
            r.waiting_for,
            [
                RotationWait {
                    member: "c1".into(),
                    reason: WaitReason::IstiodBehind,
                    message: why.into(),
                },
                RotationWait {
                    member: "c2".into(),
                    reason: WaitReason::BundleBehind,
                    message: "trusts bundle generation 0 of 1".into(),
                },
            ]
        );
        let waits: Vec<&Note> = p
            .notes
            .iter()
            .filter(|n| n.reason == events::ROTATION_WAITS_FOR_ISTIOD)
            .collect();
        assert_eq!(
            waits.len(),
            1,
            "an event for the istiod, none for c2: {waits:?}"
        );
        assert!(
            waits[0].message.contains("c1") && waits[0].message.contains("1.27.9"),
            "{}",
            waits[0].message
        );
        // Still waiting next time: no new event, no status change.
        let again = plan_after(Some(&p.status));
        assert_eq!(again.status, p.status);
        assert!(again.notes.is_empty(), "{:?}", again.notes);
        // Waiting for a reason said differently before (the version was not known yet): an
        // event with the new reason.
        let mut earlier = p.status.clone();
        earlier.rotations[0].waiting_for[0].message =
            "cacerts holds bundle generation 1 but istiod publishes generation 0: restart requested"
                .into();
        let news = plan_after(Some(&earlier));
        let waits: Vec<&Note> = news
            .notes
            .iter()
            .filter(|n| n.reason == events::ROTATION_WAITS_FOR_ISTIOD)
            .collect();
        assert_eq!(waits.len(), 1, "{waits:?}");
        assert!(waits[0].message.contains("1.27.9"), "{}", waits[0].message);
    }
}
