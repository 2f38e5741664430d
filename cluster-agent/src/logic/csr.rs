//! Step 1 of the exchange: when the agent makes a fresh key and CSR, and what it publishes.

use federator_api::member::{ClusterTrustSpec, CsrStatus};
use federator_core::csr::{CsrInfo, generate_cluster_csr};
use federator_core::identity::{ClusterName, TrustDomain};
use federator_core::key::KeyAlgorithm;

use super::material::Pending;
use super::problem::Problem;

/// Who this cluster is, from the spec (checked against `--cluster-name` when given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's name in the federation.
    pub cluster: ClusterName,
    /// Its trust domain.
    pub trust_domain: TrustDomain,
}

/// Reads and checks the cluster's identity. `expected` is the `--cluster-name` the agent was
/// started with: a spec naming another cluster is refused (a hub writing to the wrong member
/// must not get a CSR), an empty `spec.clusterName` takes it.
pub fn identity(spec: &ClusterTrustSpec, expected: Option<&str>) -> Result<Identity, Problem> {
    let name = match (spec.cluster_name.as_str(), expected) {
        ("", Some(e)) => e,
        ("", None) => return Err(Problem::NoClusterName),
        (n, Some(e)) if n != e => {
            return Err(Problem::OtherCluster {
                spec: n.to_owned(),
                flag: e.to_owned(),
            });
        }
        (n, _) => n,
    };
    let field = |field| move |source| Problem::Field { field, source };
    let cluster = ClusterName::new(name).map_err(field("spec.clusterName"))?;
    let trust_domain = TrustDomain::new(&spec.trust_domain).map_err(field("spec.trustDomain"))?;
    Ok(Identity {
        cluster,
        trust_domain,
    })
}

/// The key algorithm the spec asks for (`ecdsa-p256` when empty).
pub fn key_algorithm(spec: &ClusterTrustSpec) -> Result<KeyAlgorithm, Problem> {
    if spec.key_algorithm.is_empty() {
        return Ok(KeyAlgorithm::default());
    }
    spec.key_algorithm.parse().map_err(|source| Problem::Field {
        field: "spec.keyAlgorithm",
        source,
    })
}

/// Why a fresh key and CSR are needed, or `None` when the pending one still answers the spec.
///
/// A fresh key is made when nothing is pending, when `spec.csrGeneration` differs from the
/// pending generation (newer: a renewal; older: the hub started the exchange over, e.g. after
/// a re-join, and would otherwise wait forever), or when the pending CSR does not parse or
/// names another cluster or trust domain than the spec.
pub fn fresh_csr_reason(
    spec: &ClusterTrustSpec,
    identity: &Identity,
    pending: Option<&Pending>,
) -> Option<String> {
    let Some(p) = pending else {
        return Some("no CSR is pending".into());
    };
    if p.generation != spec.csr_generation {
        return Some(format!(
            "the hub asks for CSR generation {} and the pending CSR is generation {}",
            spec.csr_generation, p.generation
        ));
    }
    let csr = match CsrInfo::parse(p.csr_pem.as_bytes()) {
        Ok(c) => c,
        Err(e) => return Some(format!("the pending CSR is unreadable ({e})")),
    };
    let want = identity.trust_domain.spiffe_uri();
    if csr.uri_sans != [want.clone()] {
        return Some(format!(
            "the pending CSR asks for {:?} but the spec's trust domain is {want}",
            csr.uri_sans
        ));
    }
    let cn = federator_core::csr::cluster_ca_common_name(&identity.cluster);
    if !csr.subject.contains(&cn) {
        return Some(format!(
            "the pending CSR names {:?}, not cluster {}",
            csr.subject, identity.cluster
        ));
    }
    None
}

/// Makes a fresh key and CSR for `generation`.
pub fn fresh_pending(
    identity: &Identity,
    algorithm: KeyAlgorithm,
    generation: i64,
) -> federator_core::Result<Pending> {
    let (key, csr_pem) =
        generate_cluster_csr(&identity.cluster, &identity.trust_domain, algorithm)?;
    Ok(Pending {
        key_pem: key.to_pkcs8_pem().into(),
        csr_pem,
        generation,
    })
}

/// The SHA-256 (hex) of a pending CSR's DER, as the hub names it in `spec.signed.csrDigest`.
pub fn digest(pending: &Pending) -> Result<String, Problem> {
    CsrInfo::parse(pending.csr_pem.as_bytes())
        .map(|c| c.digest())
        .map_err(Problem::UnreadableCsr)
}

/// What `status.csr` must say for the pending CSR.
pub fn csr_status(pending: &Pending) -> Result<CsrStatus, Problem> {
    Ok(CsrStatus {
        generation: pending.generation,
        pem: pending.csr_pem.clone(),
        digest: digest(pending)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(generation: i64) -> ClusterTrustSpec {
        ClusterTrustSpec {
            cluster_name: "east".into(),
            trust_domain: "east.local".into(),
            csr_generation: generation,
            ..Default::default()
        }
    }

    #[test]
    fn identity_checks_the_cluster_name() {
        let s = spec(1);
        assert_eq!(identity(&s, None).unwrap().cluster.as_str(), "east");
        assert!(identity(&s, Some("east")).is_ok());
        let err = identity(&s, Some("west")).unwrap_err().to_string();
        assert!(err.contains("another cluster"), "{err}");
        let mut empty = spec(1);
        empty.cluster_name.clear();
        assert_eq!(
            identity(&empty, Some("west")).unwrap().cluster.as_str(),
            "west"
        );
        assert!(identity(&empty, None).is_err());
        let mut bad = spec(1);
        bad.trust_domain = "Bad TD".into();
        assert!(
            identity(&bad, None)
                .unwrap_err()
                .to_string()
                .contains("spec.trustDomain")
        );
    }

    #[test]
    fn key_algorithm_defaults_and_refuses_unknown() {
        assert_eq!(key_algorithm(&spec(1)).unwrap(), KeyAlgorithm::EcdsaP256);
        let mut s = spec(1);
        s.key_algorithm = "ecdsa-p384".into();
        assert_eq!(key_algorithm(&s).unwrap(), KeyAlgorithm::EcdsaP384);
        s.key_algorithm = "dsa".into();
        assert!(key_algorithm(&s).is_err());
    }

    #[test]
    fn fresh_csr_when_nothing_pending_or_generation_differs() {
        let s = spec(2);
        let id = identity(&s, None).unwrap();
        assert!(fresh_csr_reason(&s, &id, None).is_some());
        let p = fresh_pending(&id, KeyAlgorithm::EcdsaP256, 2).unwrap();
        assert_eq!(fresh_csr_reason(&s, &id, Some(&p)), None);
        assert!(fresh_csr_reason(&spec(3), &id, Some(&p)).is_some());
        assert!(fresh_csr_reason(&spec(1), &id, Some(&p)).is_some());

        let mut other_td = s.clone();
        other_td.trust_domain = "west.local".into();
        let id2 = identity(&other_td, None).unwrap();
        let why = fresh_csr_reason(&other_td, &id2, Some(&p)).unwrap();
        assert!(why.contains("trust domain"), "{why}");

        let garbage = Pending {
            csr_pem: "junk".into(),
            ..p.clone()
        };
        assert!(fresh_csr_reason(&s, &id, Some(&garbage)).is_some());
    }

    #[test]
    fn csr_status_carries_the_digest() {
        let s = spec(1);
        let id = identity(&s, None).unwrap();
        let p = fresh_pending(&id, KeyAlgorithm::EcdsaP256, 1).unwrap();
        let st = csr_status(&p).unwrap();
        assert_eq!(st.generation, 1);
        assert_eq!(st.pem, p.csr_pem);
        assert_eq!(
            st.digest,
            CsrInfo::parse(p.csr_pem.as_bytes()).unwrap().digest()
        );
        assert!(!st.pem.contains("PRIVATE KEY"));
    }
}
