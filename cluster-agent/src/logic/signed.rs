//! Step 2 of the exchange: accept (promote) or refuse the chain the hub signed.

use federator_api::member::ClusterTrustSpec;
use federator_core::bundle::TrustBundle;
use federator_core::cert;
use federator_core::csr::CsrInfo;
use federator_core::key::PrivateKey;
use federator_core::name_constraint::Constraint;
use federator_core::{policy, verify};
use time::OffsetDateTime;

use super::csr::{Identity, digest};
use super::material::{AgentMaterial, InstalledMaterial, Pending};
use super::problem::{ChainRefusal, Problem};

/// What to do with `spec.signed`.
#[derive(Debug)]
pub enum SignedStep {
    /// Nothing: no answer yet, an answer to an older CSR, or the pending CSR is installed.
    Nothing,
    /// The chain answers the pending CSR and is valid: promote it.
    Install(InstalledMaterial),
    /// The chain answers the pending CSR but is not acceptable; keep what is installed.
    Refuse(Problem),
}

/// Decides what to do with the hub's answer. `ztunnel`: whether the cluster runs ztunnel
/// (ambient mode), which rules out a cluster CA with the trust-domain name constraint.
pub fn signed_step(
    spec: &ClusterTrustSpec,
    identity: &Identity,
    bundle: &TrustBundle,
    material: &AgentMaterial,
    ztunnel: bool,
    now: OffsetDateTime,
) -> SignedStep {
    let (Some(signed), Some(pending)) = (&spec.signed, &material.pending) else {
        return SignedStep::Nothing;
    };
    // Installed already, unless the hub answered the same CSR again with another certificate:
    // it signs a CSR of the current generation once more after a different one was published
    // for it (by an agent that lost its key, or by an attacker holding this member's agent
    // identity), and the current answer is the one the hub records.
    if material.pending_is_installed()
        && material
            .installed
            .as_ref()
            .is_some_and(|i| i.chain_pem == signed.chain_pem)
    {
        return SignedStep::Nothing;
    }
    match digest(pending) {
        Ok(d) if d == signed.csr_digest => {}
        _ => return SignedStep::Nothing,
    }
    match validate_chain(&signed.chain_pem, pending, identity, bundle, ztunnel, now) {
        Ok(()) => SignedStep::Install(InstalledMaterial {
            key_pem: pending.key_pem.clone(),
            chain_pem: signed.chain_pem.clone(),
            generation: pending.generation,
        }),
        Err(reason) => SignedStep::Refuse(Problem::ChainRefused {
            generation: pending.generation,
            reason,
        }),
    }
}

/// Whether the first certificate of a PEM chain carries the trust-domain name constraint.
pub fn constrained(chain_pem: &str) -> bool {
    federator_core::name_constraint::of_chain(chain_pem).is_ok_and(|c| c != Constraint::None)
}

/// Checks a signed chain against the pending key and CSR: the cluster CA carries the CSR's
/// public key (and so matches the key), has the policy's shape (CA, path length 0,
/// keyCertSign, exactly the trust domain's SPIFFE ID, no name constraint or the one binding it
/// to that trust domain — and not that one when the cluster runs ztunnel) and is valid now,
/// and the chain leads to a root of the cluster's own trust domain in the bundle under
/// istiod's rules.
pub fn validate_chain(
    chain_pem: &str,
    pending: &Pending,
    identity: &Identity,
    bundle: &TrustBundle,
    ztunnel: bool,
    now: OffsetDateTime,
) -> Result<(), ChainRefusal> {
    let chain = cert::parse_pem_certificates(chain_pem.as_bytes(), "spec.signed.chainPem")
        .map_err(ChainRefusal::Unreadable)?;
    let (ca, above) = chain.split_first().ok_or(ChainRefusal::Empty)?;
    let csr = CsrInfo::parse(pending.csr_pem.as_bytes()).map_err(ChainRefusal::Unreadable)?;
    let constraint = policy::check_issued(ca, &csr.public_key_info, &identity.trust_domain, now)
        .map_err(ChainRefusal::Policy)?;
    if ztunnel && constraint != Constraint::None {
        return Err(ChainRefusal::ConstrainedWithZtunnel(
            identity.trust_domain.clone(),
        ));
    }
    let key = PrivateKey::from_pem(pending.key_pem.expose().as_bytes(), "pending key")
        .map_err(ChainRefusal::Unreadable)?;
    let parsed = cert::parse_der(ca).map_err(ChainRefusal::Unreadable)?;
    if !key.matches(parsed.public_key()) {
        return Err(ChainRefusal::KeyMismatch);
    }
    let roots = bundle.roots_of(&identity.trust_domain);
    if roots.is_empty() {
        return Err(ChainRefusal::NoRoot(identity.trust_domain.clone()));
    }
    verify::verify_ca_path(ca, above, &roots, now)
        .map(|_| ())
        .map_err(|source| ChainRefusal::NoPath {
            trust_domain: identity.trust_domain.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::csr::{fresh_pending, identity};
    use crate::logic::testutil::*;
    use federator_api::member::SignedCa;
    use federator_core::key::KeyAlgorithm;

    /// Cluster `east` of `east.local` with a bundle of `root`: its spec, identity and
    /// bundle, a pending generation-1 CSR, and nothing installed.
    fn east(
        root: &federator_core::ca::IssuingCa,
    ) -> (
        ClusterTrustSpec,
        Identity,
        TrustBundle,
        Pending,
        AgentMaterial,
    ) {
        let s = spec_with_bundle(&[("east.local", root)], 1);
        let id = identity(&s, None).unwrap();
        let bundle = crate::logic::cacerts::bundle_from_spec(&s).unwrap();
        let pending = fresh_pending(&id, KeyAlgorithm::EcdsaP256, 1).unwrap();
        let material = AgentMaterial {
            pending: Some(pending.clone()),
            installed: None,
        };
        (s, id, bundle, pending, material)
    }

    #[test]
    fn installs_a_valid_answer_and_refuses_bad_ones() {
        let now = OffsetDateTime::now_utc();
        let root = root_ca("east root");
        let other_root = root_ca("west root");
        let (s, id, bundle, pending, material) = east(&root);
        let with = |signed: SignedCa| {
            let mut s = s.clone();
            s.signed = Some(signed);
            s
        };
        // No answer yet.
        assert!(matches!(
            signed_step(&s, &id, &bundle, &material, false, now),
            SignedStep::Nothing
        ));
        // A valid answer.
        let good = sign(&root, &pending, "east", "east.local");
        match signed_step(&with(good.clone()), &id, &bundle, &material, false, now) {
            SignedStep::Install(i) => {
                assert_eq!(i.key_pem, pending.key_pem);
                assert_eq!(i.chain_pem, good.chain_pem);
                assert_eq!(i.generation, 1);
            }
            other => panic!("{other:?}"),
        }
        // An answer to another CSR.
        let mut stale = good.clone();
        stale.csr_digest = "00".repeat(32);
        assert!(matches!(
            signed_step(&with(stale), &id, &bundle, &material, false, now),
            SignedStep::Nothing
        ));
        // Already installed.
        let installed = AgentMaterial {
            pending: Some(pending.clone()),
            installed: Some(InstalledMaterial {
                key_pem: pending.key_pem.clone(),
                chain_pem: good.chain_pem.clone(),
                generation: 1,
            }),
        };
        assert!(matches!(
            signed_step(&with(good.clone()), &id, &bundle, &installed, false, now),
            SignedStep::Nothing
        ));
        // The same CSR signed again (another serial, the same key): the hub's current answer
        // replaces the installed one.
        let again = sign(&root, &pending, "east", "east.local");
        assert_ne!(again.chain_pem, good.chain_pem);
        match signed_step(&with(again.clone()), &id, &bundle, &installed, false, now) {
            SignedStep::Install(i) => {
                assert_eq!(i.key_pem, pending.key_pem);
                assert_eq!(i.chain_pem, again.chain_pem);
            }
            other => panic!("{other:?}"),
        }
        // Signed for another trust domain (the hub's policy would refuse the CSR; a rogue or
        // buggy hub signs anyway).
        // Why an answer is refused (panics, naming `what`, when it is not).
        let refusal = |signed: SignedCa, what: &str| match signed_step(
            &with(signed),
            &id,
            &bundle,
            &material,
            false,
            now,
        ) {
            SignedStep::Refuse(why) => why.to_string(),
            other => panic!("accepted a chain {what}: {other:?}"),
        };
        let wrong_td = sign_unchecked(&root, &pending, "east", "west.local");
        let why = refusal(wrong_td, "for another trust domain");
        assert!(why.contains("trust domain east.local"), "{why}");
        // Signed by a root that is not this trust domain's.
        let wrong_root = sign(&other_root, &pending, "east", "east.local");
        let why = refusal(wrong_root, "to a foreign root");
        assert!(why.contains("does not lead to a root"), "{why}");
        // For another key.
        let other = fresh_pending(&id, KeyAlgorithm::EcdsaP256, 1).unwrap();
        let mut other_key = sign(&root, &other, "east", "east.local");
        other_key.csr_digest = good.csr_digest.clone();
        let why = refusal(other_key, "for another key");
        assert!(why.contains("public key"), "{why}");
        // Garbage.
        let mut garbage = good.clone();
        garbage.chain_pem = "not a chain".into();
        assert!(matches!(
            signed_step(&with(garbage), &id, &bundle, &material, false, now),
            SignedStep::Refuse(_)
        ));
    }

    #[test]
    fn a_constrained_chain_installs_unless_the_cluster_runs_ztunnel() {
        let now = OffsetDateTime::now_utc();
        let root = root_ca("east root");
        let (s, id, bundle, pending, material) = east(&root);
        let mut with = s.clone();
        with.signed = Some(sign_constrained(&root, &pending, "east", "east.local"));
        match signed_step(&with, &id, &bundle, &material, false, now) {
            SignedStep::Install(i) => assert_eq!(i.generation, 1),
            other => panic!("{other:?}"),
        }
        match signed_step(&with, &id, &bundle, &material, true, now) {
            SignedStep::Refuse(why) => {
                let why = why.to_string();
                assert!(why.contains("ztunnel"), "{why}");
                assert!(why.contains("constrainToTrustDomain"), "{why}");
            }
            other => panic!("installed a constrained CA next to ztunnel: {other:?}"),
        }
        // An unconstrained chain is fine with ztunnel.
        with.signed = Some(sign(&root, &pending, "east", "east.local"));
        assert!(matches!(
            signed_step(&with, &id, &bundle, &material, true, now),
            SignedStep::Install(_)
        ));
    }
}
