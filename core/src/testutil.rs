//! Shared helpers for the unit tests of this crate.

use time::OffsetDateTime;

use crate::bundle::TrustBundle;
use crate::ca::IssuingCa;
use crate::cacerts::CaCerts;
use crate::csr::{CsrInfo, generate_cluster_csr};
use crate::identity::{ClusterName, TrustDomain};
use crate::key::KeyAlgorithm;
use crate::policy::{ClusterCaRequest, SigningPolicy};

/// Issues complete `cacerts` for a cluster under `ca`, with a bundle holding `ca`'s root.
pub fn cacerts_for(ca: &IssuingCa, cluster: &str, trust_domain: &str) -> CaCerts {
    let cluster = ClusterName::new(cluster).unwrap();
    let td = TrustDomain::new(trust_domain).unwrap();
    let (key, csr) = generate_cluster_csr(&cluster, &td, KeyAlgorithm::EcdsaP256).unwrap();
    let request = ClusterCaRequest {
        cluster,
        trust_domain: td.clone(),
    };
    let issued = SigningPolicy::default()
        .sign(
            ca,
            &CsrInfo::parse(csr.as_bytes()).unwrap(),
            &request,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    let mut bundle = TrustBundle::new();
    bundle.add(&td, ca.root_der().to_vec()).unwrap();
    CaCerts::assemble(&issued.chain_pem, &key, &bundle).unwrap()
}
