//! The unit tests' fixtures, over the workspace's test kit: a spec for cluster `east` in
//! `east.local`, and the hub's answer to a pending CSR.

use federator_api::member::{ClusterTrustSpec, SignedCa};
use federator_core::ca::IssuingCa;
use federator_testkit::exchange::{self, Hub};

use super::material::Pending;

pub use federator_testkit::pki::root as root_ca;

/// A spec for cluster `east` in `east.local` with a bundle of the given roots.
pub fn spec_with_bundle(entries: &[(&str, &IssuingCa)], csr_generation: i64) -> ClusterTrustSpec {
    exchange::spec("east", "east.local", entries, csr_generation)
}

/// The hub's answer to `pending`, under policy.
pub fn sign(root: &IssuingCa, pending: &Pending, cluster: &str, td: &str) -> SignedCa {
    exchange::signed(
        root,
        &pending.csr_pem,
        pending.generation,
        (cluster, td),
        Hub::Honest,
    )
}

/// The hub's answer to `pending` under the policy with the trust-domain name constraint.
pub fn sign_constrained(root: &IssuingCa, pending: &Pending, cluster: &str, td: &str) -> SignedCa {
    exchange::signed(
        root,
        &pending.csr_pem,
        pending.generation,
        (cluster, td),
        Hub::Constrained,
    )
}

/// A rogue answer: the CSR's public key certified for trust domain `td`, whatever the CSR asked.
pub fn sign_unchecked(root: &IssuingCa, pending: &Pending, cluster: &str, td: &str) -> SignedCa {
    exchange::signed(
        root,
        &pending.csr_pem,
        pending.generation,
        (cluster, td),
        Hub::Rogue,
    )
}
