//! Certificates for tests: roots, cluster CAs issued under the default policy, bundles and
//! complete `cacerts`.

use federator_core::bundle::TrustBundle;
use federator_core::ca::{IssuingCa, RootOptions};
use federator_core::cacerts::CaCerts;
use federator_core::csr::{CsrInfo, generate_cluster_csr};
use federator_core::identity::{ClusterName, TrustDomain};
use federator_core::key::{KeyAlgorithm, PrivateKey};
use federator_core::policy::{ClusterCaRequest, IssuedCa, SigningPolicy};
use time::OffsetDateTime;

/// Now.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A trust domain.
pub fn td(s: &str) -> TrustDomain {
    TrustDomain::new(s).unwrap()
}

/// A cluster name.
pub fn cluster(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

/// A root CA with the default options.
pub fn default_root() -> IssuingCa {
    root_with(&RootOptions::default())
}

/// A root CA named `common_name`.
pub fn root(common_name: &str) -> IssuingCa {
    root_with(&RootOptions {
        common_name: common_name.into(),
        ..RootOptions::default()
    })
}

/// A root CA made with `options`.
pub fn root_with(options: &RootOptions) -> IssuingCa {
    IssuingCa::create_root(options, now()).unwrap()
}

/// What the policy is asked to sign for `cluster` in `trust_domain`.
pub fn request(cluster_name: &str, trust_domain: &str) -> ClusterCaRequest {
    ClusterCaRequest {
        cluster: cluster(cluster_name),
        trust_domain: td(trust_domain),
    }
}

/// A fresh ECDSA P-256 key and CSR for a cluster CA.
pub fn csr(cluster_name: &str, trust_domain: &str) -> (PrivateKey, String) {
    generate_cluster_csr(
        &cluster(cluster_name),
        &td(trust_domain),
        KeyAlgorithm::EcdsaP256,
    )
    .unwrap()
}

/// Signs `csr` under the default policy for `cluster` in `trust_domain`.
pub fn sign(ca: &IssuingCa, csr: &CsrInfo, cluster_name: &str, trust_domain: &str) -> IssuedCa {
    sign_with(
        &SigningPolicy::default(),
        ca,
        csr,
        cluster_name,
        trust_domain,
    )
}

/// Signs `csr` under `policy` for `cluster` in `trust_domain`.
pub fn sign_with(
    policy: &SigningPolicy,
    ca: &IssuingCa,
    csr: &CsrInfo,
    cluster_name: &str,
    trust_domain: &str,
) -> IssuedCa {
    policy
        .sign(ca, csr, &request(cluster_name, trust_domain), now())
        .unwrap()
}

/// The default policy with the trust-domain URI name constraint.
pub fn constrained_policy() -> SigningPolicy {
    SigningPolicy {
        constrain_to_trust_domain: true,
        ..SigningPolicy::default()
    }
}

/// Signs a fresh cluster CA under `ca`; returns its key and what was issued.
pub fn issue(ca: &IssuingCa, cluster_name: &str, trust_domain: &str) -> (PrivateKey, IssuedCa) {
    let (key, pem) = csr(cluster_name, trust_domain);
    let issued = sign(
        ca,
        &CsrInfo::parse(pem.as_bytes()).unwrap(),
        cluster_name,
        trust_domain,
    );
    (key, issued)
}

/// A bundle holding `ca`'s root for `trust_domain`.
pub fn bundle_of(ca: &IssuingCa, trust_domain: &str) -> TrustBundle {
    let mut b = TrustBundle::new();
    b.add(&td(trust_domain), ca.root_der().to_vec()).unwrap();
    b
}

/// Complete, valid `cacerts` for a cluster under `ca`, with a bundle holding `ca`'s root.
pub fn cacerts(ca: &IssuingCa, cluster_name: &str, trust_domain: &str) -> CaCerts {
    let (key, issued) = issue(ca, cluster_name, trust_domain);
    CaCerts::assemble(&issued.chain_pem, &key, &bundle_of(ca, trust_domain)).unwrap()
}

/// A certificate as PEM.
pub fn pem(der: &[u8]) -> String {
    federator_core::cert::to_pem([der])
}
