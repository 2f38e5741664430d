//! The trust-domain URI name constraint, against OpenSSL as the independent verifier (what
//! Envoy's BoringSSL shares its name-constraint rules with), rustls-webpki (ztunnel's), and
//! federator's own checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use federator_core::cacerts::{self, CaCerts};
use federator_core::cert::{self, CertInfo};
use federator_core::csr::CsrInfo;
use federator_core::identity::SpiffeId;
use federator_core::name_constraint::{self, Constraint};
use federator_core::policy::{self, SigningPolicy};
use federator_core::verify;
use federator_testkit::{openssl, pki};

/// Cluster `east` of trust domain `b.example`, signed by `root` with or without the constraint;
/// its bundle holds the roots of both trust domains, as every member's does.
fn member_of_b(
    root_a: &federator_core::ca::IssuingCa,
    root_b: &federator_core::ca::IssuingCa,
    constrained: bool,
) -> CaCerts {
    let (key, pem) = pki::csr("east", "b.example");
    let csr = CsrInfo::parse(pem.as_bytes()).unwrap();
    let policy = SigningPolicy {
        constrain_to_trust_domain: constrained,
        ..SigningPolicy::default()
    };
    let issued = pki::sign_with(&policy, root_b, &csr, "east", "b.example");
    let mut bundle = pki::bundle_of(root_a, "a.example");
    bundle
        .add(&td("b.example"), root_b.root_der().to_vec())
        .unwrap();
    CaCerts::assemble(&issued.chain_pem, &key, &bundle).unwrap()
}

/// openssl's verdict on a leaf for `id` minted with `material`'s CA key, checked against the
/// bundle (all trust domains' roots) through `cert-chain.pem`.
fn openssl_verdict(material: &CaCerts, id: &str) -> Result<(), String> {
    let leaf = material
        .issue_workload_cert(
            &SpiffeId::parse(id).unwrap(),
            Duration::from_secs(600),
            now(),
        )
        .unwrap();
    openssl::verify_pem(
        &pem(&leaf.chain[0]),
        &material.root_cert,
        &material.cert_chain,
    )
}

fn roots() -> (federator_core::ca::IssuingCa, federator_core::ca::IssuingCa) {
    (
        pki::root("root of a.example"),
        pki::root("root of b.example"),
    )
}

#[test]
fn without_the_constraint_a_member_of_b_can_mint_identities_of_a() {
    let (a, b) = roots();
    let material = member_of_b(&a, &b, false);
    // The threat the constraint answers: openssl (like Envoy) accepts it.
    openssl_verdict(&material, "spiffe://a.example/ns/payments/sa/api").unwrap();
    openssl_verdict(&material, "spiffe://b.example/ns/shop/sa/web").unwrap();
}

#[test]
fn with_the_constraint_only_the_own_trust_domain_verifies_in_openssl() {
    let (a, b) = roots();
    let material = member_of_b(&a, &b, true);
    openssl_verdict(&material, "spiffe://b.example/ns/shop/sa/web").unwrap();
    let cross = openssl_verdict(&material, "spiffe://a.example/ns/payments/sa/api").unwrap_err();
    assert!(cross.contains("permitted subtree violation"), "{cross}");
    let sub = openssl_verdict(&material, "spiffe://east.b.example/ns/shop/sa/web").unwrap_err();
    // OpenSSL already refuses it as outside the permitted host (it compares hosts exactly);
    // Go, which would permit subdomains, refuses it by the excluded subtree (tests/tests).
    assert!(sub.contains("permitted subtree violation"), "{sub}");
    // The cluster CA itself still verifies (istiod loads it; the constraint binds only what
    // it signs).
    openssl::verify_cacerts(&material.files()).unwrap();
}

#[test]
fn webpki_refuses_every_leaf_below_the_constraint_and_federator_checks_it_itself() {
    let (a, b) = roots();
    let material = member_of_b(&a, &b, true);
    let roots = cert::parse_pem_certificates(material.root_cert.as_bytes(), "roots").unwrap();
    let leaf = |id: &str| {
        material
            .issue_workload_cert(
                &SpiffeId::parse(id).unwrap(),
                Duration::from_secs(600),
                now(),
            )
            .unwrap()
    };
    let own = leaf("spiffe://b.example/ns/shop/sa/web");
    // rustls-webpki (rustls, ztunnel) fails closed on URI name constraints.
    let err = verify::verify_workload_chain(&own.chain, &roots, now()).unwrap_err();
    assert!(err.to_string().contains("NameConstraintViolation"), "{err}");
    // federator's own check: the own trust domain passes, another one does not.
    let id = verify::verify_constrained_workload_chain(&own.chain, &roots, now()).unwrap();
    assert_eq!(id.to_string(), "spiffe://b.example/ns/shop/sa/web");
    let cross = leaf("spiffe://a.example/ns/payments/sa/api");
    let err = verify::verify_constrained_workload_chain(&cross.chain, &roots, now()).unwrap_err();
    assert!(
        err.to_string().contains("outside the name constraint"),
        "{err}"
    );
    // Unconstrained, webpki takes the leaf.
    let plain = member_of_b(&a, &b, false);
    let leaf = plain
        .issue_workload_cert(
            &SpiffeId::parse("spiffe://b.example/ns/shop/sa/web").unwrap(),
            Duration::from_secs(600),
            now(),
        )
        .unwrap();
    verify::verify_workload_chain(&leaf.chain, &roots, now()).unwrap();
}

#[test]
fn inspect_reads_the_constraint_and_still_checks_a_workload_end_to_end() {
    let (a, b) = roots();
    let material = member_of_b(&a, &b, true);
    let report = cacerts::inspect(&material.files(), now());
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(
        report.ca.as_ref().unwrap().name_constraint.as_deref(),
        Some("b.example")
    );
    assert_eq!(
        report.workload_check.as_deref(),
        Some("spiffe://b.example/ns/federator/sa/inspect")
    );
    let plain = cacerts::inspect(&member_of_b(&a, &b, false).files(), now());
    assert!(plain.is_ok(), "{:?}", plain.problems);
    assert_eq!(plain.ca.unwrap().name_constraint, None);
}

#[test]
fn the_policy_writes_exactly_the_constraint_and_check_issued_reads_it_back() {
    let (_, b) = roots();
    let (_, pem) = pki::csr("east", "b.example");
    let csr = CsrInfo::parse(pem.as_bytes()).unwrap();
    let issued = pki::sign_with(&pki::constrained_policy(), &b, &csr, "east", "b.example");
    let parsed = cert::parse_der(&issued.cert_der).unwrap();
    assert_eq!(
        name_constraint::read(&parsed).unwrap(),
        Constraint::TrustDomain("b.example".into())
    );
    let ext = parsed
        .extensions()
        .iter()
        .find(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_NAME_CONSTRAINTS)
        .unwrap();
    assert!(ext.critical);
    assert_eq!(
        policy::check_issued(
            &issued.cert_der,
            &csr.public_key_info,
            &td("b.example"),
            now()
        )
        .unwrap(),
        Constraint::TrustDomain("b.example".into())
    );
    // Read as another trust domain's CA, it is refused (it names b.example in both places, so
    // the SAN check already refuses; the constraint is checked on its own below).
    assert!(
        policy::check_issued(
            &issued.cert_der,
            &csr.public_key_info,
            &td("a.example"),
            now()
        )
        .is_err()
    );
    let plain = pki::sign(&b, &csr, "east", "b.example");
    assert_eq!(
        policy::check_issued(
            &plain.cert_der,
            &csr.public_key_info,
            &td("b.example"),
            now()
        )
        .unwrap(),
        Constraint::None
    );
    assert_eq!(
        CertInfo::from_der(&plain.cert_der).unwrap().name_constraint,
        None
    );
}

#[test]
fn other_name_constraints_are_refused_with_what_they_hold() {
    use rcgen::{
        BasicConstraints, CertificateParams, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose,
        NameConstraints,
    };
    let (_, pem) = pki::csr("east", "b.example");
    let csr = CsrInfo::parse(pem.as_bytes()).unwrap();
    // A CA with a DNS name constraint, signed over the CSR's key by a rogue signer.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://b.example".try_into().unwrap(),
    )];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName("example.com".into())],
        excluded_subtrees: vec![],
    });
    let subject = rcgen::SubjectPublicKeyInfo::from_der(&csr.public_key_info).unwrap();
    let issuer = rcgen::Issuer::new(CertificateParams::default(), key);
    let der = params.signed_by(&subject, &issuer).unwrap().der().to_vec();
    let err =
        policy::check_issued(&der, &csr.public_key_info, &td("b.example"), now()).unwrap_err();
    assert!(
        err.to_string()
            .contains("federator only writes URI constraints"),
        "{err}"
    );
    let info = CertInfo::from_der(&der).unwrap();
    assert!(info.name_constraint.unwrap().contains("DNSName"));
}
