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

/// How the hub answers a CSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hub {
    /// Under its policy.
    Honest,
    /// Under its policy with the trust-domain URI name constraint.
    Constrained,
    /// A rogue hub: the CSR's public key certified for the trust domain it names, whatever
    /// the CSR asked.
    Rogue,
}

/// The hub's answer to a CSR of `generation`, signed by `root` for `cluster` in
/// `trust_domain` (no renewal point).
pub fn signed(
    root: &IssuingCa,
    csr_pem: &str,
    generation: i64,
    (cluster, trust_domain): (&str, &str),
    hub: Hub,
) -> SignedCa {
    let mut csr = CsrInfo::parse(csr_pem.as_bytes()).unwrap();
    let digest = csr.digest();
    if hub == Hub::Rogue {
        csr.uri_sans.clear();
    }
    let issued = match hub {
        Hub::Constrained => pki::sign_with(
            &pki::constrained_policy(),
            root,
            &csr,
            cluster,
            trust_domain,
        ),
        Hub::Honest | Hub::Rogue => pki::sign(root, &csr, cluster, trust_domain),
    };
    SignedCa::answer(&digest, generation, &issued, None).unwrap()
}
