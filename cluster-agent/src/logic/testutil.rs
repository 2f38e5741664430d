//! Helpers for the unit tests: roots, specs and a hub that signs.

use federator_api::member::{BundleEntry, ClusterTrustSpec, SignedCa};
use federator_core::ca::{IssuingCa, RootOptions};
use federator_core::cert::CertInfo;
use federator_core::csr::CsrInfo;
use federator_core::identity::{ClusterName, TrustDomain};
use federator_core::policy::{ClusterCaRequest, SigningPolicy};
use time::OffsetDateTime;

use super::material::Pending;

pub fn root_ca(common_name: &str) -> IssuingCa {
    IssuingCa::create_root(
        &RootOptions {
            common_name: common_name.into(),
            ..RootOptions::default()
        },
        OffsetDateTime::now_utc(),
    )
    .unwrap()
}

/// A spec for cluster `east` in `east.local` with a bundle of the given roots.
pub fn spec_with_bundle(entries: &[(&str, &IssuingCa)], csr_generation: i64) -> ClusterTrustSpec {
    ClusterTrustSpec {
        cluster_name: "east".into(),
        trust_domain: "east.local".into(),
        bundle: entries
            .iter()
            .map(|(td, ca)| BundleEntry {
                trust_domain: (*td).into(),
                roots_pem: ca.cert_pem(),
            })
            .collect(),
        bundle_generation: 1,
        csr_generation,
        ..Default::default()
    }
}

fn sign_csr(
    root: &IssuingCa,
    csr: &CsrInfo,
    digest: String,
    generation: i64,
    cluster: &str,
    td: &str,
) -> SignedCa {
    let issued = SigningPolicy::default()
        .sign(
            root,
            csr,
            &ClusterCaRequest {
                cluster: ClusterName::new(cluster).unwrap(),
                trust_domain: TrustDomain::new(td).unwrap(),
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    let info = CertInfo::from_der(&issued.cert_der).unwrap();
    SignedCa {
        csr_digest: digest,
        generation,
        chain_pem: issued.chain_pem,
        serial: info.serial,
        not_after: info.not_after,
        renew_after: String::new(),
    }
}

/// The hub's answer to `pending`, under policy.
pub fn sign(root: &IssuingCa, pending: &Pending, cluster: &str, td: &str) -> SignedCa {
    let csr = CsrInfo::parse(pending.csr_pem.as_bytes()).unwrap();
    let digest = csr.digest();
    sign_csr(root, &csr, digest, pending.generation, cluster, td)
}

/// A rogue answer: the CSR's public key certified for trust domain `td`, whatever the CSR asked.
pub fn sign_unchecked(root: &IssuingCa, pending: &Pending, cluster: &str, td: &str) -> SignedCa {
    let mut csr = CsrInfo::parse(pending.csr_pem.as_bytes()).unwrap();
    let digest = csr.digest();
    csr.uri_sans.clear();
    sign_csr(root, &csr, digest, pending.generation, cluster, td)
}
