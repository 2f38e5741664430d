//! Workload leaves against bundles (rustls-webpki), across clusters and trust domains.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use federator_core::bundle::TrustBundle;
use federator_core::cert;
use federator_core::identity::SpiffeId;
use federator_core::verify::{verify_svid, verify_workload_chain};

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

#[test]
fn leaves_cross_verify_within_a_federation_and_not_outside() {
    let federation = root();
    let east = cacerts(&federation, "east", "cluster.local");
    let west = cacerts(&federation, "west", "cluster.local");
    let outsider = cacerts(&root(), "outsider", "cluster.local");

    let leaf = east
        .issue_workload_cert(
            &id("spiffe://cluster.local/ns/a/sa/b"),
            Duration::from_secs(600),
            now(),
        )
        .unwrap();
    let west_roots = cert::parse_pem_certificates(west.root_cert.as_bytes(), "west").unwrap();
    let got = verify_workload_chain(&leaf.chain, &west_roots, now()).unwrap();
    assert_eq!(got.to_string(), "spiffe://cluster.local/ns/a/sa/b");

    let outsider_roots = cert::parse_pem_certificates(outsider.root_cert.as_bytes(), "o").unwrap();
    let err = verify_workload_chain(&leaf.chain, &outsider_roots, now())
        .unwrap_err()
        .to_string();
    // Both roots are named alike, so webpki finds the name and then fails the signature.
    assert!(
        err.contains("does not verify") && err.contains("Signature"),
        "{err}"
    );
}

#[test]
fn svid_verification_uses_only_the_leaf_trust_domain_roots() {
    let a_root = root();
    let b_root = root();
    let a = cacerts(&a_root, "a", "a.example");
    let leaf = a
        .issue_workload_cert(
            &id("spiffe://a.example/ns/x/sa/y"),
            Duration::from_secs(600),
            now(),
        )
        .unwrap();
    let mut bundle = TrustBundle::new();
    bundle
        .add(&td("b.example"), b_root.root_der().to_vec())
        .unwrap();
    bundle
        .add(&td("b.example"), a_root.root_der().to_vec())
        .unwrap();
    // a's root is in the bundle, but only under b.example: the SVID must not verify.
    let err = verify_svid(&leaf.chain, &bundle, now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no roots for trust domain a.example"), "{err}");
    bundle
        .add(&td("a.example"), a_root.root_der().to_vec())
        .unwrap();
    verify_svid(&leaf.chain, &bundle, now()).unwrap();
}

#[test]
fn expired_leaves_and_non_svids_are_refused() {
    let ca = root();
    let c = cacerts(&ca, "east", "cluster.local");
    let roots = vec![ca.root_der().to_vec()];
    let leaf = c
        .issue_workload_cert(
            &id("spiffe://cluster.local/ns/a/sa/b"),
            Duration::from_secs(60),
            now(),
        )
        .unwrap();
    let later = now() + Duration::from_secs(3600);
    assert!(
        verify_workload_chain(&leaf.chain, &roots, later)
            .unwrap_err()
            .to_string()
            .contains("Expired")
    );
    // The CA certificate itself is not a workload certificate.
    let ca_chain = cert::parse_pem_certificates(c.cert_chain.as_bytes(), "c").unwrap();
    assert!(verify_workload_chain(&ca_chain, &roots, now()).is_err());
    // A SPIFFE ID without a path is not a workload identity.
    let bad = c
        .issue_workload_cert(
            &id("spiffe://cluster.local"),
            Duration::from_secs(60),
            now(),
        )
        .unwrap();
    assert!(
        verify_workload_chain(&bad.chain, &roots, now())
            .unwrap_err()
            .to_string()
            .contains("needs a path")
    );
}

/// Found by review while fuzzing `cacerts` (regression fuzz/regressions/cacerts/
/// cross-signed-loop): twelve certificates that all issue one another made the CA path search
/// try every ordering of them (12!/4! paths of signature checks: hours). It now stops after
/// MAX_SIGNATURE_CHECKS, as Go's verifier does.
#[test]
fn path_search_gives_up_on_certificates_that_issue_one_another() {
    let input = federator_core::fuzz::cross_signed_loop(12).unwrap();
    let err = federator_core::fuzz::cacerts(&input).unwrap_err();
    assert!(
        err.contains("gave up building a path") && err.contains("100 signature checks"),
        "{err}"
    );
}
