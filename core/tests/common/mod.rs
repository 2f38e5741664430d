//! Helpers shared by the core's integration tests: certificates with exactly the defects a
//! test needs, built with rcgen.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use federator_core::bundle::TrustBundle;
use federator_core::ca::{IssuingCa, RootOptions};
use federator_core::cacerts::CaCerts;
use federator_core::csr::{CsrInfo, generate_cluster_csr};
use federator_core::identity::{ClusterName, TrustDomain};
use federator_core::key::{KeyAlgorithm, PrivateKey};
use federator_core::policy::{ClusterCaRequest, IssuedCa, SigningPolicy};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::OffsetDateTime;

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub fn td(s: &str) -> TrustDomain {
    TrustDomain::new(s).unwrap()
}

pub fn root() -> IssuingCa {
    IssuingCa::create_root(&RootOptions::default(), now()).unwrap()
}

pub fn request(cluster: &str, trust_domain: &str) -> ClusterCaRequest {
    ClusterCaRequest {
        cluster: ClusterName::new(cluster).unwrap(),
        trust_domain: td(trust_domain),
    }
}

/// Signs a fresh cluster CA under `ca`; returns the key and what was issued.
pub fn issue(ca: &IssuingCa, cluster: &str, trust_domain: &str) -> (PrivateKey, IssuedCa) {
    let req = request(cluster, trust_domain);
    let (key, csr) =
        generate_cluster_csr(&req.cluster, &req.trust_domain, KeyAlgorithm::EcdsaP256).unwrap();
    let issued = SigningPolicy::default()
        .sign(ca, &CsrInfo::parse(csr.as_bytes()).unwrap(), &req, now())
        .unwrap();
    (key, issued)
}

pub fn bundle_of(ca: &IssuingCa, trust_domain: &str) -> TrustBundle {
    let mut b = TrustBundle::new();
    b.add(&td(trust_domain), ca.root_der().to_vec()).unwrap();
    b
}

/// Complete, valid cacerts for a cluster under `ca`.
pub fn cacerts(ca: &IssuingCa, cluster: &str, trust_domain: &str) -> CaCerts {
    let (key, issued) = issue(ca, cluster, trust_domain);
    CaCerts::assemble(&issued.chain_pem, &key, &bundle_of(ca, trust_domain)).unwrap()
}

pub fn files(c: &CaCerts) -> BTreeMap<String, Vec<u8>> {
    c.files()
}

pub fn pem(der: &[u8]) -> String {
    federator_core::cert::to_pem([der])
}

/// A hand-made CA certificate for defect tests.
pub struct Made {
    pub der: Vec<u8>,
    pub key: KeyPair,
}

impl Made {
    pub fn pem(&self) -> String {
        pem(&self.der)
    }
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }
}

pub struct Spec {
    pub cn: &'static str,
    pub is_ca: IsCa,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub eku: Vec<rcgen::ExtendedKeyUsagePurpose>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Spec {
    pub fn ca(cn: &'static str, path_len: Option<u8>) -> Self {
        Self {
            cn,
            is_ca: IsCa::Ca(match path_len {
                Some(n) => BasicConstraints::Constrained(n),
                None => BasicConstraints::Unconstrained,
            }),
            key_usages: vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
            eku: vec![],
            not_before: now() - Duration::from_secs(3600),
            not_after: now() + Duration::from_secs(86400),
        }
    }

    fn params(&self) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, "test");
        p.distinguished_name.push(DnType::CommonName, self.cn);
        p.is_ca = self.is_ca;
        p.key_usages = self.key_usages.clone();
        p.extended_key_usages = self.eku.clone();
        p.not_before = self.not_before;
        p.not_after = self.not_after;
        p.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        serial[..8].copy_from_slice(&rand_u64().to_be_bytes());
        serial[0] |= 1;
        serial[0] &= 0x7f;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        p
    }

    pub fn self_signed(&self) -> Made {
        let key = KeyPair::generate().unwrap();
        let der = self.params().self_signed(&key).unwrap().der().to_vec();
        Made { der, key }
    }

    pub fn signed_by(&self, parent: &Made) -> Made {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_ca_cert_der(&parent.der.as_slice().into(), &parent.key).unwrap();
        let der = self
            .params()
            .signed_by(&key, &issuer)
            .unwrap()
            .der()
            .to_vec();
        Made { der, key }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now().unix_timestamp_nanos() as u64);
    h.finish()
}
