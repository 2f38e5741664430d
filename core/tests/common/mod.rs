//! Helpers shared by the core's integration tests: the workspace's PKI fixtures
//! (`federator-testkit`), and certificates with exactly the defects a test needs, built with
//! rcgen.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use federator_core::ca::IssuingCa;
use federator_core::cacerts::CaCerts;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::OffsetDateTime;

pub use federator_testkit::pki::{bundle_of, cacerts, issue, now, pem, request, td};

pub fn root() -> IssuingCa {
    federator_testkit::pki::default_root()
}

pub fn files(c: &CaCerts) -> BTreeMap<String, Vec<u8>> {
    c.files()
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
