//! The `cacerts` validator: one test per rule, each on material broken in exactly one way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use federator_core::cacerts::{self, CA_CERT, CA_KEY, CERT_CHAIN, ISTIO_GENERATED, ROOT_CERT};
use federator_core::cert;
use rcgen::{IsCa, KeyUsagePurpose};

/// The problems of `files`, as "file: message" lines.
fn problems(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    cacerts::inspect(files, now())
        .problems
        .into_iter()
        .map(|p| format!("{}: {}", p.file, p.message))
        .collect()
}

fn assert_problem(files: &BTreeMap<String, Vec<u8>>, file: &str, fragment: &str) {
    let got = problems(files);
    assert!(
        got.iter()
            .any(|p| p.starts_with(&format!("{file}: ")) && p.contains(fragment)),
        "expected a problem in {file} containing {fragment:?}, got {got:#?}"
    );
}

fn valid() -> BTreeMap<String, Vec<u8>> {
    files(&cacerts(&root(), "east", "cluster.local"))
}

fn set(mut f: BTreeMap<String, Vec<u8>>, name: &str, content: &str) -> BTreeMap<String, Vec<u8>> {
    f.insert(name.to_owned(), content.as_bytes().to_vec());
    f
}

/// cacerts whose signing certificate is `made`, issued by `root_made`.
fn with_ca(made: &Made, root_made: &Made) -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    f.insert(CA_CERT.to_owned(), made.pem().into_bytes());
    f.insert(CA_KEY.to_owned(), made.key_pem().into_bytes());
    f.insert(
        CERT_CHAIN.to_owned(),
        format!("{}{}", made.pem(), root_made.pem()).into_bytes(),
    );
    f.insert(ROOT_CERT.to_owned(), root_made.pem().into_bytes());
    f
}

#[test]
fn valid_material_has_no_problem_and_a_full_report() {
    let report = cacerts::inspect(&valid(), now());
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.trust_domain.as_deref(), Some("cluster.local"));
    assert_eq!(report.key.as_deref(), Some("ECDSA P-256"));
    assert_eq!(report.chain.len(), 2);
    assert_eq!(report.roots.len(), 1);
    assert_eq!(report.ca.unwrap().sha256, report.chain[0].sha256);
    assert_eq!(
        report.workload_check.as_deref(),
        Some("spiffe://cluster.local/ns/federator/sa/inspect")
    );
}

#[test]
fn every_missing_file_is_named() {
    for name in cacerts::FILES {
        let mut f = valid();
        f.remove(name);
        assert_problem(&f, name, "incomplete signing CA bundle");
    }
    let got = problems(&BTreeMap::new());
    assert_eq!(got.len(), 4);
    assert!(got[0].contains("self-signed CA"));
}

#[test]
fn istio_generated_key_is_refused() {
    assert_problem(
        &set(valid(), ISTIO_GENERATED, ""),
        ISTIO_GENERATED,
        "self-signed CA store",
    );
}

#[test]
fn garbage_and_truncated_pem_are_named() {
    assert_problem(
        &set(valid(), CA_CERT, "garbage"),
        CA_CERT,
        "no PEM block found",
    );
    let f = valid();
    let cert_text = String::from_utf8(f[CA_CERT].clone()).unwrap();
    assert_problem(
        &set(f.clone(), CA_CERT, &cert_text[..cert_text.len() / 2]),
        CA_CERT,
        "truncated",
    );
    assert_problem(
        &set(f.clone(), CA_KEY, "garbage"),
        CA_KEY,
        "no PEM block found",
    );
    assert_problem(
        &set(
            f.clone(),
            CERT_CHAIN,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ),
        CERT_CHAIN,
        "not valid X.509",
    );
    let key_text = String::from_utf8(f[CA_KEY].clone()).unwrap();
    assert_problem(
        &set(f, ROOT_CERT, &key_text),
        ROOT_CERT,
        "expected CERTIFICATE",
    );
}

#[test]
fn key_must_match_the_certificate() {
    let other = files(&cacerts(&root(), "west", "cluster.local"));
    let f = set(
        valid(),
        CA_KEY,
        std::str::from_utf8(&other[CA_KEY]).unwrap(),
    );
    assert_problem(&f, CA_KEY, "does not match ca-cert.pem");
}

#[test]
fn signing_cert_must_be_a_ca_with_cert_sign() {
    let r = Spec::ca("root", Some(1)).self_signed();
    let leaf = Spec {
        is_ca: IsCa::ExplicitNoCa,
        ..Spec::ca("leaf", None)
    }
    .signed_by(&r);
    assert_problem(&with_ca(&leaf, &r), CA_CERT, "not a CA certificate");
    let no_sign = Spec {
        key_usages: vec![KeyUsagePurpose::DigitalSignature],
        ..Spec::ca("nosign", Some(0))
    }
    .signed_by(&r);
    assert_problem(&with_ca(&no_sign, &r), CA_CERT, "lacks keyCertSign");
    let fine = Spec::ca("fine", Some(0)).signed_by(&r);
    assert!(
        problems(&with_ca(&fine, &r)).is_empty(),
        "{:?}",
        problems(&with_ca(&fine, &r))
    );
}

#[test]
fn time_validity_is_checked() {
    let r = Spec::ca("root", Some(1)).self_signed();
    let expired = Spec {
        not_before: now() - Duration::from_secs(7200),
        not_after: now() - Duration::from_secs(60),
        ..Spec::ca("expired", Some(0))
    }
    .signed_by(&r);
    let f = with_ca(&expired, &r);
    assert_problem(&f, CA_CERT, "expired on");
    assert_problem(&f, CERT_CHAIN, "cert chain has expired");
    let future = Spec {
        not_before: now() + Duration::from_secs(600),
        ..Spec::ca("future", Some(0))
    }
    .signed_by(&r);
    assert_problem(&with_ca(&future, &r), CA_CERT, "not valid until");
    let expired_root = Spec {
        not_before: now() - Duration::from_secs(7200),
        not_after: now() - Duration::from_secs(60),
        ..Spec::ca("old root", Some(1))
    }
    .self_signed();
    let ca = Spec::ca("ca", Some(0)).signed_by(&expired_root);
    assert_problem(&with_ca(&ca, &expired_root), CA_CERT, "old root expired on");
}

#[test]
fn chain_must_start_with_the_signing_cert() {
    let f = valid();
    let chain = cert::parse_pem_certificates(&f[CERT_CHAIN], "x").unwrap();
    let reordered = format!("{}{}", pem(&chain[1]), pem(&chain[0]));
    assert_problem(
        &set(f.clone(), CERT_CHAIN, &reordered),
        CERT_CHAIN,
        "does not start with ca-cert.pem",
    );
}

#[test]
fn signing_cert_must_chain_to_a_root_in_root_cert() {
    let other_root = pem(root().root_der());
    let f = set(valid(), ROOT_CERT, &other_root);
    assert_problem(&f, CA_CERT, "does not verify against root-cert.pem");
}

#[test]
fn duplicate_roots_are_flagged() {
    let f = valid();
    let root_text = String::from_utf8(f[ROOT_CERT].clone()).unwrap();
    assert_problem(
        &set(f, ROOT_CERT, &format!("{root_text}{root_text}")),
        ROOT_CERT,
        "twice",
    );
}

#[test]
fn path_length_is_enforced_with_the_cluster_ca_counted() {
    // A root with pathlen 0 cannot have a cluster CA below it: workload chains would have
    // one intermediate too many.
    let r = Spec::ca("root", Some(0)).self_signed();
    let ca = Spec::ca("ca", Some(0)).signed_by(&r);
    assert_problem(&with_ca(&ca, &r), CA_CERT, "pathlen 0");
}

#[test]
fn restrictive_eku_on_a_ca_is_refused() {
    let r = Spec::ca("root", Some(1)).self_signed();
    let ca = Spec {
        eku: vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        ..Spec::ca("ca", Some(0))
    }
    .signed_by(&r);
    assert_problem(&with_ca(&ca, &r), CA_CERT, "without serverAuth");
}

#[test]
fn an_intermediate_missing_from_the_chain_is_found() {
    let r = Spec::ca("root", Some(2)).self_signed();
    let mid = Spec::ca("mid", Some(1)).signed_by(&r);
    let ca = Spec::ca("ca", Some(0)).signed_by(&mid);
    let mut f = with_ca(&ca, &r);
    assert_problem(
        &f,
        CA_CERT,
        "no certificate in the roots or the chain issued",
    );
    f.insert(
        CERT_CHAIN.into(),
        format!("{}{}{}", ca.pem(), mid.pem(), r.pem()).into_bytes(),
    );
    assert!(problems(&f).is_empty(), "{:?}", problems(&f));
}

#[test]
fn debug_output_redacts_the_key() {
    let c = cacerts(&root(), "east", "cluster.local");
    let dbg = format!("{c:?}");
    assert!(dbg.contains("<redacted>"));
    let body = c.ca_key.lines().nth(1).unwrap();
    assert!(!dbg.contains(body));
}
