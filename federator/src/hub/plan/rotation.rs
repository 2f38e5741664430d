//! Root rotation as a pure state machine, for any backend: its input is what the signer
//! holds for a trust domain (the new root, the previous one and the rotation's recorded
//! state) and what the members acknowledge; its output is the phase, what to record in the
//! signer's store, whether the trust domain's members must be re-signed now, and when to look
//! again.
//!
//! ```text
//!  start ──▶ TrustingNewRoot ──every member trusts the bundle with both roots──▶ ReSigning
//!            ReSigning ──every member of the trust domain runs on the new root──▶ Draining
//!            (record Resigned{now})
//!            Draining ──drain period over──▶ done (record Finished: the old root leaves)
//! ```
//!
//! A member trusts a bundle once its `cacerts` holds it and, with an istiod, once istiod
//! publishes it (the hub's `bundleGenerationAcknowledged` is the smaller of the two): an
//! istiod that must restart to take the new roots, is down, or ignored the change holds
//! `TrustingNewRoot` back, since re-signing under a root it does not serve would break its
//! workloads' trust; until then the previous root still signs (the plan's `signing_roots`), so
//! a member that joins or renews meanwhile gets a CA every peer trusts. Each step names the
//! members it waits for and why ([`RotationWait`]).
//!
//! The phase is derived from the members' reported state each time, so a restarted hub
//! resumes where it was; only the moment the last member moved (`resigned_at`) is recorded,
//! because the drain period counts from it.
//!
//! A rotation covers one trust domain (`local`: a root per trust domain) or every trust domain
//! at once ([`Scope::Issuer`]: `import` and `vault` have one issuer for all). An abort is the
//! same machine run backwards: the previous root signs again and the new one becomes the
//! root that is still trusted ([`RotationState::aborted`]), so the members move back with
//! both roots trusted throughout, and the new root leaves after the drain. [`check_target`]
//! is what a new issuer must pass before a rotation starts.

use std::time::Duration;

use federator_api::fields;
use federator_api::hub::{RotationPhase, RotationStatus, RotationWait, WaitReason};
use federator_core::cert::{self, fingerprint};
use federator_core::identity::TrustDomain;
use time::OffsetDateTime;

/// What a rotation covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// One trust domain's root (`local`).
    TrustDomain(TrustDomain),
    /// The one issuer of every trust domain (`import`, `vault`); shown as `*`.
    Issuer,
}

impl Scope {
    /// Whether a member of trust domain `td` is moved by this rotation.
    pub fn covers(&self, td: &str) -> bool {
        match self {
            Scope::TrustDomain(t) => t.as_str() == td,
            Scope::Issuer => true,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::TrustDomain(td) => write!(f, "{td}"),
            Scope::Issuer => f.write_str("*"),
        }
    }
}

/// A rotation as the signer records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationState {
    /// SHA-256 of the new root (the one that signs).
    pub new_root_sha256: String,
    /// SHA-256 of the previous root (still trusted).
    pub previous_root_sha256: String,
    /// How long to keep trusting the previous root once every member runs on the new one.
    pub drain: Duration,
    /// When every member of the trust domain was running on the new root.
    pub resigned_at: Option<OffsetDateTime>,
    /// Whether this is an aborted rotation going back: the "new" root is the original one,
    /// the "previous" the one the rotation had moved to.
    pub aborted: bool,
}

/// What one member acknowledges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAck {
    /// Its `MemberCluster` name.
    pub name: String,
    /// Its trust domain.
    pub trust_domain: String,
    /// The bundle generation it trusts (in `cacerts` and, with an istiod, published by it).
    pub bundle_generation: i64,
    /// When its `cacerts` holds a newer bundle than its istiod publishes: why (the hub's
    /// `IstiodBehind` message, naming the version and what the agent did).
    pub istiod_behind: Option<String>,
    /// SHA-256 of the root its installed cluster CA chains to.
    pub root_sha256: String,
    /// Whether it runs the cluster CA the hub last signed.
    pub installed: bool,
}

/// What to record in the signer's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Every member of the trust domain runs on the new root since `at`.
    Resigned {
        /// When.
        at: OffsetDateTime,
    },
    /// The rotation is over: drop the previous root.
    Finished,
}

/// One step of a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The phase after this step; `None` once finished.
    pub phase: Option<RotationPhase>,
    /// What to record.
    pub record: Option<Record>,
    /// Whether the trust domain's members still under the previous root must be renewed now.
    pub resign: bool,
    /// When the previous root leaves the bundle (draining only).
    pub removes_old_root_at: Option<OffsetDateTime>,
    /// When to look again even if nothing else changes.
    pub wake_at: Option<OffsetDateTime>,
    /// The members the phase waits for, and why.
    pub waiting_for: Vec<RotationWait>,
}

/// Moves the rotation of `scope` forward as far as the members allow. `members` are every
/// member of the federation (all of them must trust the new root before anyone is signed
/// under it); `bundle_generation` is the generation of the bundle that holds both roots.
pub fn step(
    scope: &Scope,
    rotation: &RotationState,
    members: &[MemberAck],
    bundle_generation: i64,
    now: OffsetDateTime,
) -> Step {
    let drain = time::Duration::try_from(rotation.drain).unwrap_or(time::Duration::MAX);
    let draining_until = |since: OffsetDateTime| {
        since
            .checked_add(drain)
            .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
    };
    if let Some(resigned) = rotation.resigned_at {
        let until = draining_until(resigned);
        if now >= until {
            return Step {
                phase: None,
                record: Some(Record::Finished),
                resign: false,
                removes_old_root_at: None,
                wake_at: None,
                waiting_for: Vec::new(),
            };
        }
        return Step {
            phase: Some(RotationPhase::Draining),
            record: None,
            resign: false,
            removes_old_root_at: Some(until),
            wake_at: Some(until),
            waiting_for: Vec::new(),
        };
    }
    let not_trusting: Vec<RotationWait> = members
        .iter()
        .filter(|m| m.bundle_generation < bundle_generation)
        .map(|m| match &m.istiod_behind {
            Some(why) => wait(m, WaitReason::IstiodBehind, why.clone()),
            None => wait(
                m,
                WaitReason::BundleBehind,
                format!(
                    "trusts bundle generation {} of {bundle_generation}",
                    m.bundle_generation
                ),
            ),
        })
        .collect();
    if !not_trusting.is_empty() {
        return Step {
            phase: Some(RotationPhase::TrustingNewRoot),
            record: None,
            resign: false,
            removes_old_root_at: None,
            wake_at: None,
            waiting_for: not_trusting,
        };
    }
    let not_on_new_root: Vec<RotationWait> = members
        .iter()
        .filter(|m| scope.covers(&m.trust_domain))
        .filter(|m| !(m.installed && m.root_sha256 == rotation.new_root_sha256))
        .map(|m| {
            let why = if m.root_sha256 == rotation.new_root_sha256 {
                "it does not run the cluster CA signed under the new root yet"
            } else {
                "its cluster CA is not under the new root yet"
            };
            wait(m, WaitReason::NotOnNewRoot, why.to_owned())
        })
        .collect();
    if not_on_new_root.is_empty() {
        let until = draining_until(now);
        Step {
            phase: Some(RotationPhase::Draining),
            record: Some(Record::Resigned { at: now }),
            resign: true,
            removes_old_root_at: Some(until),
            wake_at: Some(until),
            waiting_for: Vec::new(),
        }
    } else {
        Step {
            phase: Some(RotationPhase::ReSigning),
            record: None,
            resign: true,
            removes_old_root_at: None,
            wake_at: None,
            waiting_for: not_on_new_root,
        }
    }
}

/// When the rotation entered `phase`, its phase after this step: the moment the last member
/// moved when draining (recorded, or being recorded now), else the time the status last
/// reported (`before`) while the phase stays the same, else `now` (the phase changes now, or
/// a hub that did not record the time wrote the status).
pub fn phase_since(
    before: Option<&RotationStatus>,
    phase: RotationPhase,
    rotation: &RotationState,
    now: OffsetDateTime,
) -> OffsetDateTime {
    if phase == RotationPhase::Draining {
        return rotation.resigned_at.unwrap_or(now);
    }
    before
        .filter(|b| b.phase == phase)
        .and_then(|b| b.phase_since.as_ref())
        .map_or(now, fields::offset)
}

/// What a new issuer is checked against before a rotation to it starts.
#[derive(Clone, Copy, Debug)]
pub struct TargetRules<'a> {
    /// The root the federation trusts now (DER), for the scope rotated.
    pub current_root: &'a [u8],
    /// The latest moment a cluster CA signed now, or already installed, must be valid until
    /// (now + the cluster CA lifetime, or a member's CA NotAfter if later).
    pub must_outlive: OffsetDateTime,
    /// Now.
    pub now: OffsetDateTime,
}

/// Checks a new issuer (its certificate, then the chain above it up to the root; DER) before
/// a rotation to it: an issuer that can sign cluster CAs (a CA with room for one more level,
/// keyCertSign, a key at least as strong as the policy asks — RSA 2048, ECDSA P-256 — no
/// SHA-1, valid now, chained to a root: [`federator_core::ca::check_issuer`]), under another
/// root than the current one, that lives (with every certificate above it) at least until
/// `must_outlive`, so that the members' cluster CAs are not cut short. Returns the new
/// root's SHA-256. Every refusal names what is wrong and what to do.
pub fn check_target(chain: &[Vec<u8>], rules: &TargetRules<'_>) -> crate::Result<String> {
    let refuse = |why: String| crate::Error::Usage(format!("refusing to rotate: {why}"));
    let (issuer, above) = chain
        .split_first()
        .ok_or_else(|| refuse("the new CA holds no certificate".into()))?;
    federator_core::ca::check_issuer(issuer, above, rules.now)
        .map_err(|e| refuse(format!("the new CA cannot sign cluster CAs: {e}")))?;
    let root = chain.last().map(Vec::as_slice).unwrap_or(issuer);
    let new_root = fingerprint(root);
    if new_root == fingerprint(rules.current_root) {
        return Err(refuse(format!(
            "the new CA chains to the current root (sha256 {new_root}); a rotation moves to another root (a new intermediate under the same root needs no change of trust: re-issue the members with `federator renew cluster NAME`)"
        )));
    }
    for der in chain {
        let c = cert::parse_der(der)?;
        let (_, not_after) = cert::validity(&c);
        if not_after < rules.must_outlive {
            return Err(refuse(format!(
                "{} expires on {}, before the cluster CAs signed under it would ({}); use an issuer that lives longer, or shorten --cluster-ca-ttl",
                c.subject(),
                cert::rfc3339(not_after),
                cert::rfc3339(rules.must_outlive)
            )));
        }
    }
    Ok(new_root)
}

fn wait(m: &MemberAck, reason: WaitReason, message: String) -> RotationWait {
    RotationWait {
        member: m.name.clone(),
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "new-root";
    const OLD: &str = "old-root";

    fn t(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn rotation(resigned_at: Option<&str>) -> RotationState {
        RotationState {
            new_root_sha256: NEW.into(),
            previous_root_sha256: OLD.into(),
            drain: Duration::from_secs(3600),
            resigned_at: resigned_at.map(t),
            aborted: false,
        }
    }

    fn member(td: &str, generation: i64, root: &str, installed: bool) -> MemberAck {
        MemberAck {
            name: format!("in-{td}"),
            trust_domain: td.into(),
            bundle_generation: generation,
            istiod_behind: None,
            root_sha256: root.into(),
            installed,
        }
    }

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn a_local() -> Scope {
        Scope::TrustDomain(TrustDomain::new("a.local").unwrap())
    }

    /// A step of a.local's rotation before any move was recorded, with bundle generation 5.
    fn unrecorded(members: &[MemberAck]) -> Step {
        step(&a_local(), &rotation(None), members, 5, t(NOW))
    }

    #[test]
    fn the_phase_follows_what_the_members_acknowledge() {
        use RotationPhase::{Draining, ReSigning, TrustingNewRoot};
        // Members as (trust domain, bundle generation installed, root, running it); the
        // bundle with both roots is generation 5.
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, i64, &'a str, bool)],
            RotationPhase,
            bool,
        );
        let cases: [Case<'_>; 4] = [
            (
                "a member of another trust domain without the new bundle holds everyone back",
                &[("a.local", 5, OLD, true), ("b.local", 4, "b-root", true)],
                TrustingNewRoot,
                false,
            ),
            (
                "once everyone trusts both roots, the trust domain is re-signed",
                &[
                    ("a.local", 5, OLD, true),
                    ("a.local", 5, NEW, true),
                    ("b.local", 6, "b-root", true),
                ],
                ReSigning,
                true,
            ),
            (
                "signed under the new root but not running it yet still counts as old",
                &[("a.local", 5, NEW, false)],
                ReSigning,
                true,
            ),
            (
                "every member on the new root: the move is recorded, stragglers (none) renewed",
                &[("a.local", 5, NEW, true), ("b.local", 5, "b-root", true)],
                Draining,
                true,
            ),
        ];
        for (why, members, phase, resign) in cases {
            let members: Vec<MemberAck> = members
                .iter()
                .map(|(td, generation, root, running)| member(td, *generation, root, *running))
                .collect();
            let s = unrecorded(&members);
            assert_eq!((s.phase, s.resign), (Some(phase), resign), "{why}");
            assert_eq!(
                s.waiting_for.is_empty(),
                phase == Draining,
                "{why}: {:?}",
                s.waiting_for
            );
            let recorded = (phase == Draining).then_some(Record::Resigned { at: t(NOW) });
            assert_eq!(s.record, recorded, "{why}");
            if phase == Draining {
                assert_eq!(s.removes_old_root_at, Some(t("2026-01-01T01:00:00Z")));
                assert_eq!(s.wake_at, s.removes_old_root_at);
            } else {
                assert_eq!((s.removes_old_root_at, s.wake_at), (None, None), "{why}");
            }
        }
    }

    #[test]
    fn an_istiod_that_does_not_publish_the_new_bundle_holds_the_rotation_back() {
        // c-old's cacerts holds generation 5, but its istiod (1.27.9, restarting) still
        // publishes generation 4: the hub acknowledges 4 and says why.
        let behind = MemberAck {
            name: "c-old".into(),
            bundle_generation: 4,
            istiod_behind: Some(
                "cacerts holds bundle generation 5 but istiod 1.27.9 publishes generation 4: restart requested".into(),
            ),
            ..member("a.local", 4, OLD, true)
        };
        let current = MemberAck {
            name: "c-new".into(),
            ..member("b.local", 5, "b-root", true)
        };
        let lagging = MemberAck {
            name: "c-slow".into(),
            ..member("b.local", 3, "b-root", true)
        };
        let s = unrecorded(&[behind.clone(), current.clone(), lagging]);
        assert_eq!(s.phase, Some(RotationPhase::TrustingNewRoot));
        assert!(
            !s.resign,
            "nobody is signed under a root an istiod does not serve"
        );
        assert_eq!(
            s.waiting_for,
            [
                RotationWait {
                    member: "c-old".into(),
                    reason: WaitReason::IstiodBehind,
                    message: behind.istiod_behind.clone().unwrap(),
                },
                RotationWait {
                    member: "c-slow".into(),
                    reason: WaitReason::BundleBehind,
                    message: "trusts bundle generation 3 of 5".into(),
                },
            ],
            "only the members behind, each with why"
        );
        // The same istiod, stopped for good, keeps it there: no step moves on.
        let s = unrecorded(&[behind.clone(), current.clone()]);
        assert_eq!(s.phase, Some(RotationPhase::TrustingNewRoot));
        assert_eq!(s.waiting_for.len(), 1);
        // It publishes the bundle (restarted): re-signing, waiting for the members of the
        // rotated trust domain that still run under the old root.
        let published = MemberAck {
            bundle_generation: 5,
            istiod_behind: None,
            ..behind
        };
        let s = unrecorded(&[published.clone(), current]);
        assert_eq!((s.phase, s.resign), (Some(RotationPhase::ReSigning), true));
        assert_eq!(
            s.waiting_for,
            [RotationWait {
                member: "c-old".into(),
                reason: WaitReason::NotOnNewRoot,
                message: "its cluster CA is not under the new root yet".into(),
            }]
        );
        // Signed under the new root, but cacerts does not hold it yet.
        let signed = MemberAck {
            root_sha256: NEW.into(),
            installed: false,
            ..published
        };
        let s = unrecorded(std::slice::from_ref(&signed));
        assert_eq!(s.waiting_for[0].reason, WaitReason::NotOnNewRoot);
        assert!(s.waiting_for[0].message.contains("does not run"), "{s:?}");
        // Running it: draining waits for nobody.
        let moved = MemberAck {
            installed: true,
            ..signed
        };
        let s = unrecorded(&[moved]);
        assert_eq!(s.phase, Some(RotationPhase::Draining));
        assert!(s.waiting_for.is_empty());
    }

    #[test]
    fn drains_then_finishes() {
        // Members are irrelevant once the move is recorded.
        let s = step(
            &a_local(),
            &rotation(Some("2025-12-31T23:30:00Z")),
            &[member("a.local", 1, OLD, false)],
            5,
            t(NOW),
        );
        assert_eq!(s.phase, Some(RotationPhase::Draining));
        assert_eq!((s.record, s.resign), (None, false));
        assert_eq!(s.wake_at, Some(t("2026-01-01T00:30:00Z")));
        let s = step(
            &a_local(),
            &rotation(Some("2025-12-31T23:00:00Z")),
            &[],
            5,
            t(NOW),
        );
        assert_eq!(s.phase, None);
        assert_eq!(s.record, Some(Record::Finished));
        assert_eq!(s.wake_at, None);
    }

    #[test]
    fn a_trust_domain_without_members_moves_straight_to_draining() {
        let gone = Scope::TrustDomain(TrustDomain::new("gone.local").unwrap());
        let s = step(&gone, &rotation(None), &[], 1, t(NOW));
        assert_eq!(s.phase, Some(RotationPhase::Draining));
        assert_eq!(s.record, Some(Record::Resigned { at: t(NOW) }));
    }

    #[test]
    fn the_phase_start_moves_only_when_the_phase_changes() {
        use RotationPhase::{Draining, ReSigning, TrustingNewRoot};
        let reported = |phase, since: Option<&str>| RotationStatus {
            trust_domain: "a.local".into(),
            phase,
            previous_sha256: OLD.into(),
            sha256: NEW.into(),
            removes_old_root_at: None,
            phase_since: since.map(|s| fields::time(t(s))),
            waiting_for: Vec::new(),
            aborted: false,
        };
        let earlier = "2025-12-31T22:00:00Z";
        let r = rotation(None);
        // A new rotation starts its first phase now.
        assert_eq!(phase_since(None, TrustingNewRoot, &r, t(NOW)), t(NOW));
        // The same phase keeps its start.
        let before = reported(TrustingNewRoot, Some(earlier));
        assert_eq!(
            phase_since(Some(&before), TrustingNewRoot, &r, t(NOW)),
            t(earlier)
        );
        // A new phase starts now.
        assert_eq!(phase_since(Some(&before), ReSigning, &r, t(NOW)), t(NOW));
        // Reported without a start (an earlier hub): counted from now.
        let unknown = reported(ReSigning, None);
        assert_eq!(phase_since(Some(&unknown), ReSigning, &r, t(NOW)), t(NOW));
        // Draining starts when the last member moved, as recorded.
        let moved = "2025-12-31T23:30:00Z";
        let recorded = rotation(Some(moved));
        assert_eq!(
            phase_since(Some(&reported(Draining, None)), Draining, &recorded, t(NOW)),
            t(moved)
        );
        assert_eq!(phase_since(Some(&before), Draining, &r, t(NOW)), t(NOW));
    }

    /// A rotation aborted in `phase`: what `roots::abort_rotation` records (the roles of the
    /// roots swapped, the move forgotten).
    fn aborted(r: &RotationState) -> RotationState {
        RotationState {
            new_root_sha256: r.previous_root_sha256.clone(),
            previous_root_sha256: r.new_root_sha256.clone(),
            resigned_at: None,
            aborted: true,
            ..r.clone()
        }
    }

    /// A small world of three members (two in a.local, one in b.local) that does what the hub
    /// asks, one step at a time: a member installs the current bundle generation, a member
    /// asked to re-sign moves to the signing root. Both roots are in the bundle (generation 5)
    /// until the rotation finishes; the test checks at every step that every member's root is
    /// in every member's trusted bundle — no trust gap — and at the end that nobody runs on
    /// the root that leaves.
    #[test]
    fn an_abort_in_any_phase_moves_everyone_back_without_a_gap() {
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum At {
            TrustingNewRoot,
            ReSigning,
            Draining,
        }
        for abort_at in [At::TrustingNewRoot, At::ReSigning, At::Draining] {
            let mut members = vec![
                MemberAck {
                    name: "c1".into(),
                    ..member("a.local", 4, OLD, true)
                },
                MemberAck {
                    name: "c2".into(),
                    ..member("a.local", 4, OLD, true)
                },
                MemberAck {
                    name: "c3".into(),
                    ..member("b.local", 4, "b-root", true)
                },
            ];
            let mut state = rotation(None);
            state.drain = Duration::from_secs(60);
            let mut now = t(NOW);
            let mut aborted_yet = false;
            let mut finished = None;
            for _round in 0..20 {
                let s = step(&a_local(), &state, &members, 5, now);
                let phase = s.phase.map(|p| match p {
                    RotationPhase::TrustingNewRoot => At::TrustingNewRoot,
                    RotationPhase::ReSigning => At::ReSigning,
                    RotationPhase::Draining => At::Draining,
                });
                match s.record {
                    Some(Record::Resigned { at }) => state.resigned_at = Some(at),
                    Some(Record::Finished) => {
                        finished = Some(state.previous_root_sha256.clone());
                        break;
                    }
                    None => {}
                }
                if phase == Some(abort_at) && !aborted_yet {
                    state = aborted(&state);
                    aborted_yet = true;
                    continue;
                }
                // The world moves: one member installs the bundle, or one is re-signed.
                if let Some(m) = members.iter_mut().find(|m| m.bundle_generation < 5) {
                    m.bundle_generation = 5;
                } else if s.resign
                    && let Some(m) = members.iter_mut().find(|m| {
                        m.trust_domain == "a.local" && m.root_sha256 != state.new_root_sha256
                    })
                {
                    m.root_sha256.clone_from(&state.new_root_sha256);
                }
                // No gap: a member on either root of a.local is trusted by everyone whose
                // bundle holds both (generation 5), and everyone on the new root has them all
                // trusting it.
                for m in &members {
                    if m.root_sha256 == NEW {
                        assert!(
                            members.iter().all(|o| o.bundle_generation == 5),
                            "{abort_at:?}: {} moved to the new root before everyone trusted it",
                            m.name
                        );
                    }
                }
                now += time::Duration::seconds(30);
            }
            assert!(aborted_yet, "{abort_at:?} was reached");
            assert_eq!(
                finished.as_deref(),
                Some(NEW),
                "{abort_at:?}: the abandoned new root is the one that leaves"
            );
            assert!(
                members.iter().all(|m| m.root_sha256 != NEW),
                "{abort_at:?}: everyone is back on the original root: {members:?}"
            );
        }
    }

    #[test]
    fn a_new_issuer_is_checked_before_a_rotation() {
        use federator_core::ca::RootOptions;
        use federator_testkit::pki;
        let now = OffsetDateTime::now_utc();
        let current = pki::root("current");
        let offline = pki::root_with(&RootOptions {
            common_name: "offline".into(),
            path_len: 2,
            ..RootOptions::default()
        });
        let intermediate = |ttl| {
            offline
                .create_intermediate(
                    &RootOptions {
                        common_name: "federation CA".into(),
                        ttl,
                        ..RootOptions::default()
                    },
                    now,
                )
                .unwrap()
        };
        let chain = |ca: &federator_core::ca::IssuingCa| -> Vec<Vec<u8>> {
            std::iter::once(ca.cert_der().to_vec())
                .chain(ca.chain_above().iter().cloned())
                .collect()
        };
        let rules = |must_outlive| TargetRules {
            current_root: current.root_der(),
            must_outlive,
            now,
        };
        let day = Duration::from_secs(86400);
        let good = intermediate(day * 30);
        assert_eq!(
            check_target(&chain(&good), &rules(now + day)).unwrap(),
            fingerprint(offline.root_der()),
            "an intermediate under another root: its root is the new one"
        );
        let refused = |chain: &[Vec<u8>], must_outlive, what: &str| {
            let err = check_target(chain, &rules(must_outlive)).unwrap_err();
            assert!(err.to_string().contains(what), "{what}: {err}");
            assert_eq!(err.exit_code(), 2);
        };
        refused(&chain(&good), now + day * 31, "expires on");
        refused(&chain(&current), now, "chains to the current root");
        // A cluster CA is a CA, but with no room below it.
        let (_, issued) = pki::issue(&offline, "c1", "a.local");
        refused(
            std::slice::from_ref(&issued.cert_der),
            now,
            "path length is 0",
        );
        // An intermediate without its chain.
        refused(&chain(&good)[..1], now, "append its issuer chain");
        refused(&[], now, "holds no certificate");
    }

    #[test]
    fn an_endless_drain_never_overflows() {
        let mut r = rotation(Some(NOW));
        r.drain = Duration::MAX;
        let s = step(&a_local(), &r, &[], 1, t("2026-06-01T00:00:00Z"));
        assert_eq!(s.phase, Some(RotationPhase::Draining));
    }
}
