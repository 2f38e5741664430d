//! The signing policy: what a cluster CA gets, and what a CSR may not ask for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use federator_core::ca::IssuingCa;
use federator_core::cacerts::{self, CaCerts};
use federator_core::cert::{self, CertInfo};
use federator_core::csr::{CsrInfo, generate_cluster_csr};
use federator_core::identity::{ClusterName, SpiffeId};
use federator_core::key::KeyAlgorithm;
use federator_core::policy::SigningPolicy;
use federator_core::verify;
use proptest::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

fn csr_with(f: impl FnOnce(&mut CertificateParams)) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "east intermediate CA");
    p.subject_alt_names = vec![SanType::URI("spiffe://east.example".try_into().unwrap())];
    f(&mut p);
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn refusal(csr: &str) -> String {
    let req = request("east", "east.example");
    match CsrInfo::parse(csr.as_bytes()) {
        Err(e) => e.to_string(),
        Ok(info) => SigningPolicy::default()
            .sign(&root(), &info, &req, now())
            .unwrap_err()
            .to_string(),
    }
}

#[test]
fn cluster_ca_fields_are_decided_by_the_policy() {
    let ca = root();
    let before = now();
    let (key, issued) = issue(&ca, "east", "east.example");
    let info = &issued.info;
    assert!(info.is_ca);
    assert_eq!(info.path_len, Some(0));
    assert_eq!(
        info.key_usage,
        vec!["digitalSignature", "keyCertSign", "cRLSign"]
    );
    assert_eq!(info.extended_key_usage, None);
    assert_eq!(info.uri_sans, vec!["spiffe://east.example"]);
    assert!(info.dns_sans.is_empty());
    assert_eq!(info.trust_domain.as_deref(), Some("east.example"));
    assert_eq!(info.subject, "O=federator, L=east, CN=east intermediate CA");
    assert_eq!(info.issuer, ca.info().unwrap().subject);
    assert_eq!(info.authority_key_id, ca.info().unwrap().subject_key_id);
    assert!(info.subject_key_id.is_some());
    let parsed = cert::parse_der(&issued.cert_der).unwrap();
    let (nb, na) = cert::validity(&parsed);
    assert!(
        nb <= before - Duration::from_secs(299),
        "NotBefore is backdated"
    );
    let ttl = SigningPolicy::default().ttl;
    assert!((na - (before + ttl)).abs() < time::Duration::seconds(5));
    assert!(key.matches(parsed.public_key()));
    // cert-chain order: cluster CA, then the root.
    let chain = cert::parse_pem_certificates(issued.chain_pem.as_bytes(), "chain").unwrap();
    assert_eq!(chain, vec![issued.cert_der.clone(), ca.root_der().to_vec()]);
}

#[test]
fn same_csr_signed_twice_gets_distinct_serials() {
    let ca = root();
    let req = request("east", "east.example");
    let (_, csr) =
        generate_cluster_csr(&req.cluster, &req.trust_domain, KeyAlgorithm::EcdsaP256).unwrap();
    let info = CsrInfo::parse(csr.as_bytes()).unwrap();
    let a = SigningPolicy::default()
        .sign(&ca, &info, &req, now())
        .unwrap();
    let b = SigningPolicy::default()
        .sign(&ca, &info, &req, now())
        .unwrap();
    assert_ne!(a.info.serial, b.info.serial);
}

#[test]
fn not_after_is_capped_at_the_issuer() {
    let short = Spec {
        not_after: now() + Duration::from_secs(600),
        ..Spec::ca("short-lived root", Some(1))
    }
    .self_signed();
    let ca = IssuingCa::import(short.pem().as_bytes(), short.key_pem().as_bytes(), now()).unwrap();
    let (_, issued) = issue(&ca, "east", "east.example");
    assert_eq!(
        issued.info.not_after,
        CertInfo::from_der(&short.der).unwrap().not_after
    );
}

#[test]
fn refuses_what_the_policy_does_not_grant() {
    let cases: Vec<(String, &str)> = vec![
        (
            csr_with(|p| {
                p.subject_alt_names =
                    vec![SanType::URI("spiffe://west.example".try_into().unwrap())]
            }),
            "asks for trust domain west.example but cluster east is in trust domain east.example",
        ),
        (
            csr_with(|p| {
                p.subject_alt_names = vec![SanType::URI("https://example.com".try_into().unwrap())]
            }),
            "asks for the URI SAN https://example.com",
        ),
        (
            csr_with(|p| {
                p.subject_alt_names.push(SanType::DnsName(
                    "istiod.istio-system.svc".try_into().unwrap(),
                ))
            }),
            "asks for the DNS name istiod.istio-system.svc",
        ),
        (
            csr_with(|p| p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1))),
            "asks for path length 1",
        ),
        (
            csr_with(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
            "unlimited path length",
        ),
        (
            csr_with(|p| p.is_ca = IsCa::ExplicitNoCa),
            "non-CA certificate",
        ),
        (
            csr_with(|p| p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]),
            "asks for extended key usage serverAuth",
        ),
        (
            csr_with(|p| {
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::KeyEncipherment,
                ]
            }),
            "asks for key usage keyEncipherment",
        ),
        (
            csr_with(|p| {
                p.custom_extensions =
                    vec![CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0])]
            }),
            "asks for extension 1.2.3.4",
        ),
        (
            include_str!("data/rsa1024.csr").to_owned(),
            "RSA key of 1024 bits is too weak",
        ),
        (include_str!("data/ed25519.csr").to_owned(), "Ed25519"),
        (
            include_str!("data/p521.csr").to_owned(),
            "curve 1.3.132.0.35",
        ),
        (
            include_str!("data/tools-certs.csr").to_owned(),
            "asks for the DNS name istiod.istio-system.svc",
        ),
        ("garbage".to_owned(), "no PEM block"),
    ];
    for (csr, expected) in cases {
        let got = refusal(&csr);
        assert!(got.contains(expected), "expected {expected:?}, got {got:?}");
    }
}

#[test]
fn refuses_a_tampered_csr() {
    let csr = csr_with(|_| {});
    let mut der = pem::parse(&csr).unwrap().into_contents();
    let n = der.len();
    der[n - 5] ^= 0x55; // inside the signature
    let got = CsrInfo::parse(&der).unwrap_err().to_string();
    assert!(got.contains("signature does not verify"), "{got}");
    // The subject altered after signing.
    let mut der = pem::parse(&csr).unwrap().into_contents();
    let pos = der.windows(4).position(|w| w == b"east").unwrap();
    der[pos] = b'w';
    let got = CsrInfo::parse(&der).unwrap_err().to_string();
    assert!(got.contains("signature does not verify"), "{got}");
}

#[test]
fn path_lengths_validate_under_an_intermediate_issuer() {
    let enterprise = Spec::ca("enterprise root", Some(1)).self_signed();
    let federation = Spec::ca("federation intermediate", Some(0)).signed_by(&enterprise);
    // pathlen 0 on the federation CA: refused at import.
    let chain = format!("{}{}", federation.pem(), enterprise.pem());
    assert!(IssuingCa::import(chain.as_bytes(), federation.key_pem().as_bytes(), now()).is_err());

    let enterprise = Spec::ca("enterprise root", Some(2)).self_signed();
    let federation = Spec::ca("federation intermediate", Some(1)).signed_by(&enterprise);
    let chain = format!("{}{}", federation.pem(), enterprise.pem());
    let ca = IssuingCa::import(chain.as_bytes(), federation.key_pem().as_bytes(), now()).unwrap();
    let c = cacerts(&ca, "east", "east.example");
    let report = cacerts::inspect(&c.files(), now());
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(
        report.chain.len(),
        3,
        "cluster CA, federation intermediate, enterprise root"
    );
    let leaf = c
        .issue_workload_cert(
            &SpiffeId::parse("spiffe://east.example/ns/a/sa/b").unwrap(),
            Duration::from_secs(600),
            now(),
        )
        .unwrap();
    let roots = cert::parse_pem_certificates(c.root_cert.as_bytes(), "roots").unwrap();
    verify::verify_workload_chain(&leaf.chain, &roots, now()).unwrap();
}

fn cluster_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,20}[a-z0-9]"
}

fn trust_domain() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,30}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Any well-formed CSR from the agent side is signed, gives valid cacerts, and a workload
    /// of that cluster verifies with rustls-webpki.
    #[test]
    fn random_csrs_give_valid_material(cluster in cluster_name(), td_name in trust_domain(), p384 in any::<bool>()) {
        static CA: std::sync::OnceLock<IssuingCa> = std::sync::OnceLock::new();
        let ca = CA.get_or_init(root);
        let req = request(&cluster, &td_name);
        let alg = if p384 { KeyAlgorithm::EcdsaP384 } else { KeyAlgorithm::EcdsaP256 };
        let (key, csr) = generate_cluster_csr(&req.cluster, &req.trust_domain, alg).unwrap();
        let info = CsrInfo::parse(csr.as_bytes()).unwrap();
        prop_assert_eq!(info.key, alg.kind());
        let issued = SigningPolicy::default().sign(ca, &info, &req, now()).unwrap();
        let c = CaCerts::assemble(&issued.chain_pem, &key, &bundle_of(ca, &td_name)).unwrap();
        let report = cacerts::inspect(&c.files(), now());
        prop_assert!(report.is_ok(), "{:?}", report.problems);
        prop_assert_eq!(report.trust_domain.as_deref(), Some(td_name.as_str()));
        let id = SpiffeId::workload(&req.trust_domain, "ns", "sa").unwrap();
        let leaf = c.issue_workload_cert(&id, Duration::from_secs(60), now()).unwrap();
        let got = verify::verify_svid(&leaf.chain, &bundle_of(ca, &td_name), now()).unwrap();
        prop_assert_eq!(got, id);
        prop_assert!(ClusterName::new(&cluster).is_ok());
    }
}
