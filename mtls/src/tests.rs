//! Tests of the CA answer handling, the SPIFFE verifier and the handshake with certificates
//! made locally (the tests against real istiod are in `tests/tests/istiod.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::{SpiffeVerifier, Workload, WorkloadCert, handshake};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_owned());
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// istiod's answer for a leaf with `sans`, and the key.
    fn answer(&self, sans: Vec<SanType>) -> (Vec<String>, KeyPair) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = sans;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = p.signed_by(&key, &self.issuer).unwrap();
        (vec![leaf.pem(), self.pem()], key)
    }

    fn workload(&self, id: &str) -> WorkloadCert {
        let (answer, key) = self.answer(vec![uri(id)]);
        WorkloadCert::from_response(&answer, key.serialize_der(), key.public_key_raw()).unwrap()
    }
}

fn uri(id: &str) -> SanType {
    SanType::URI(id.try_into().unwrap())
}

#[test]
fn an_answer_needs_a_leaf_with_the_key_and_roots() {
    let ca = Ca::new("root");
    let w = ca.workload("spiffe://td/ns/a/sa/b");
    assert_eq!(w.spiffe_id, "spiffe://td/ns/a/sa/b");
    assert_eq!((w.chain().len(), w.roots().len()), (1, 1));
    assert!(w.intermediates().is_empty());

    let (answer, key) = ca.answer(vec![uri("spiffe://td/ns/a/sa/b")]);
    let err = |a: &[String]| {
        WorkloadCert::from_response(a, key.serialize_der(), key.public_key_raw())
            .unwrap_err()
            .to_string()
    };
    assert!(err(&[]).contains("empty chain"));
    assert!(err(&answer[..1]).contains("single element"));
    let other = KeyPair::generate().unwrap();
    let e = WorkloadCert::from_response(&answer, other.serialize_der(), other.public_key_raw())
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not carry the key"), "{e}");
    // A leaf without a SPIFFE ID is no workload certificate.
    let (dns_only, key) = ca.answer(vec![SanType::DnsName("web.example".try_into().unwrap())]);
    let e = WorkloadCert::from_response(&dns_only, key.serialize_der(), key.public_key_raw())
        .unwrap_err()
        .to_string();
    assert!(e.contains("0 URI SAN"), "{e}");
}

#[test]
fn the_verifier_checks_roots_and_expected_peers() {
    let ca = Ca::new("root");
    let w = ca.workload("spiffe://td/ns/a/sa/b");
    let roots: Vec<CertificateDer<'static>> =
        crate::parse_pem_certs(ca.pem().as_bytes(), "r").unwrap();
    let now = UnixTime::now();
    let usage = webpki::KeyUsage::client_auth();
    let v = SpiffeVerifier::new(&roots).unwrap();
    assert_eq!(
        v.verify_peer(w.leaf(), w.intermediates(), now, usage)
            .unwrap(),
        "spiffe://td/ns/a/sa/b"
    );
    let only_c = SpiffeVerifier::new(&roots)
        .unwrap()
        .expect_peers(["spiffe://td/ns/c/sa/c"]);
    let e = only_c
        .verify_peer(w.leaf(), w.intermediates(), now, usage)
        .unwrap_err();
    assert_eq!(
        e,
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
    );
    let other_roots = crate::parse_pem_certs(Ca::new("other").pem().as_bytes(), "r").unwrap();
    let e = SpiffeVerifier::new(&other_roots)
        .unwrap()
        .verify_peer(w.leaf(), w.intermediates(), now, usage)
        .unwrap_err();
    assert_eq!(
        e,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );
    assert!(SpiffeVerifier::new(&[]).is_err());
}

#[tokio::test]
async fn workloads_of_one_root_shake_hands_and_a_foreign_one_cannot() {
    let ca = Ca::new("root");
    let bundle = ca.pem();
    let a = Workload::new(ca.workload("spiffe://td/ns/a/sa/a"), bundle.as_bytes()).unwrap();
    let b = Workload::new(ca.workload("spiffe://td/ns/b/sa/b"), bundle.as_bytes()).unwrap();
    let out = handshake(&a, &b).await.unwrap();
    assert_eq!(out.client_saw, "spiffe://td/ns/b/sa/b");
    assert_eq!(out.server_saw, "spiffe://td/ns/a/sa/a");

    let other = Ca::new("other");
    let stranger = Workload::new(
        other.workload("spiffe://td/ns/a/sa/a"),
        other.pem().as_bytes(),
    )
    .unwrap();
    for (client, server) in [(&a, &stranger), (&stranger, &a)] {
        let e = handshake(client, server).await.unwrap_err().to_string();
        assert!(e.contains("UnknownIssuer"), "{e}");
    }
    // A workload trusting both roots still needs the peer to trust it back.
    let both = format!("{}{}", ca.pem(), other.pem());
    let a_trusting_both = Workload::new(a.cert().clone(), both.as_bytes()).unwrap();
    let e = handshake(&a_trusting_both, &stranger).await.unwrap_err();
    let crate::Error::Handshake { server, .. } = &e else {
        panic!("{e}");
    };
    assert!(server.contains("UnknownIssuer"), "{e}");
}
