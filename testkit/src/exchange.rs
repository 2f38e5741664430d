//! The exchange's objects as the hub writes them, for tests that play the hub.

use federator_api::member::{BundleEntry, ClusterTrustSpec, SignedCa};
use federator_core::ca::IssuingCa;
use federator_core::csr::CsrInfo;

use crate::pki;

/// A bundle entry: `ca`'s root for `trust_domain`.
pub fn bundle_entry(trust_domain: &str, ca: &IssuingCa) -> BundleEntry {
    BundleEntry {
        trust_domain: trust_domain.into(),
        roots_pem: ca.cert_pem(),
    }
}

/// A spec for `cluster` in `trust_domain` with a bundle of the given roots (generation 1).
pub fn spec(
    cluster: &str,
    trust_domain: &str,
    bundle: &[(&str, &IssuingCa)],
    csr_generation: i64,
) -> ClusterTrustSpec {
    ClusterTrustSpec {
        cluster_name: cluster.into(),
        trust_domain: trust_domain.into(),
        bundle: bundle.iter().map(|(td, ca)| bundle_entry(td, ca)).collect(),
        bundle_generation: 1,
        csr_generation,
        ..ClusterTrustSpec::default()
    }
}

/// The hub's answer to a CSR of `generation`, signed under policy by `root` for `cluster` in
/// `trust_domain` (no renewal point).
pub fn signed(
    root: &IssuingCa,
    csr_pem: &str,
    generation: i64,
    cluster: &str,
    trust_domain: &str,
) -> SignedCa {
    let csr = CsrInfo::parse(csr_pem.as_bytes()).unwrap();
    answer(root, &csr, &csr.digest(), generation, cluster, trust_domain)
}

/// A rogue answer: the CSR's public key certified for `trust_domain`, whatever the CSR asked
/// (the answer of a hub that skips its policy).
pub fn signed_unchecked(
    root: &IssuingCa,
    csr_pem: &str,
    generation: i64,
    cluster: &str,
    trust_domain: &str,
) -> SignedCa {
    let mut csr = CsrInfo::parse(csr_pem.as_bytes()).unwrap();
    let digest = csr.digest();
    csr.uri_sans.clear();
    answer(root, &csr, &digest, generation, cluster, trust_domain)
}

fn answer(
    root: &IssuingCa,
    csr: &CsrInfo,
    digest: &str,
    generation: i64,
    cluster: &str,
    trust_domain: &str,
) -> SignedCa {
    let issued = pki::sign(root, csr, cluster, trust_domain);
    SignedCa::answer(digest, generation, &issued, None).unwrap()
}
