//! Creating and importing the issuing CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use federator_core::ca::{IssuingCa, RootOptions};
use federator_core::cert::CertInfo;
use federator_core::key::KeyAlgorithm;
use rcgen::{IsCa, KeyUsagePurpose};

fn import_err(cert: &str, key: &str) -> String {
    IssuingCa::import(cert.as_bytes(), key.as_bytes(), now())
        .unwrap_err()
        .to_string()
}

#[test]
fn root_has_the_promised_fields() {
    for alg in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let opts = RootOptions {
            key_algorithm: alg,
            ttl: Duration::from_secs(24 * 3600),
            organization: "Example Corp".into(),
            common_name: "example root".into(),
            path_len: 2,
        };
        let ca = IssuingCa::create_root(&opts, now()).unwrap();
        let info = ca.info().unwrap();
        assert!(info.is_ca);
        assert_eq!(info.path_len, Some(2));
        assert_eq!(info.key_usage, vec!["keyCertSign", "cRLSign"]);
        assert_eq!(info.subject, "O=Example Corp, CN=example root");
        assert!(info.self_issued);
        assert!(info.subject_key_id.is_some());
        assert_eq!(info.key, alg.kind().to_string());
        assert_eq!(ca.root_der(), ca.cert_der());
        let na = ca.not_after().unwrap();
        assert!((na - (now() + opts.ttl)).abs() < time::Duration::seconds(5));
    }
    let bad = RootOptions {
        path_len: 0,
        ..RootOptions::default()
    };
    assert!(
        IssuingCa::create_root(&bad, now())
            .unwrap_err()
            .to_string()
            .contains("path length")
    );
}

#[test]
fn roots_get_distinct_random_serials() {
    let a = root().info().unwrap().serial;
    let b = root().info().unwrap().serial;
    assert_ne!(a, b);
    assert_eq!(a.split(':').count(), 16);
}

#[test]
fn imports_a_root_in_every_key_format() {
    let made = Spec::ca("imported root", Some(1)).self_signed();
    let pkcs8 = made.key_pem();
    let ca = IssuingCa::import(made.pem().as_bytes(), pkcs8.as_bytes(), now()).unwrap();
    assert_eq!(ca.cert_der(), made.der.as_slice());
    // SEC1 form of the same key.
    let sk = {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_pem(&pkcs8).unwrap()
    };
    let sec1 = sk.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
    IssuingCa::import(made.pem().as_bytes(), sec1.as_bytes(), now()).unwrap();
}

#[test]
fn refuses_what_cannot_be_a_federation_ca() {
    let leaf = Spec {
        is_ca: IsCa::ExplicitNoCa,
        ..Spec::ca("not a ca", None)
    }
    .self_signed();
    assert!(import_err(&leaf.pem(), &leaf.key_pem()).contains("not a CA certificate"));

    let a = Spec::ca("a", Some(1)).self_signed();
    let b = Spec::ca("b", Some(1)).self_signed();
    assert!(import_err(&a.pem(), &b.key_pem()).contains("does not match"));

    let expired = Spec {
        not_before: now() - Duration::from_secs(7200),
        not_after: now() - Duration::from_secs(3600),
        ..Spec::ca("old", Some(1))
    }
    .self_signed();
    assert!(import_err(&expired.pem(), &expired.key_pem()).contains("expired on"));

    let future = Spec {
        not_before: now() + Duration::from_secs(3600),
        not_after: now() + Duration::from_secs(7200),
        ..Spec::ca("future", Some(1))
    }
    .self_signed();
    assert!(import_err(&future.pem(), &future.key_pem()).contains("not valid yet"));

    let pathlen0 = Spec::ca("p0", Some(0)).self_signed();
    assert!(import_err(&pathlen0.pem(), &pathlen0.key_pem()).contains("path length is 0"));

    let no_certsign = Spec {
        key_usages: vec![KeyUsagePurpose::CrlSign],
        ..Spec::ca("nocs", Some(1))
    }
    .self_signed();
    assert!(import_err(&no_certsign.pem(), &no_certsign.key_pem()).contains("keyCertSign"));

    let client_eku = Spec {
        eku: vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        ..Spec::ca("eku", Some(1))
    }
    .self_signed();
    assert!(import_err(&client_eku.pem(), &client_eku.key_pem()).contains("serverAuth"));

    let weak = include_str!("data/rsa1024-ca.pem");
    let weak_key = include_str!("data/rsa1024-ca.key");
    let e = import_err(weak, weak_key);
    assert!(e.contains("1024 bits is too weak"), "{e}");

    let sha1 = include_str!("data/sha1-ca.pem");
    let sha1_key = include_str!("data/sha1-ca.key");
    assert!(import_err(sha1, sha1_key).contains("SHA-1"));

    assert!(import_err("garbage", &a.key_pem()).starts_with("CA certificate: no PEM block found"));
    let truncated = &a.pem()[..200];
    assert!(import_err(truncated, &a.key_pem()).contains("truncated"));
    assert!(import_err(&a.pem(), "garbage").starts_with("CA key: "));
}

#[test]
fn imports_an_intermediate_only_with_its_chain() {
    let enterprise = Spec::ca("enterprise root", Some(2)).self_signed();
    let federation = Spec::ca("federation intermediate", Some(1)).signed_by(&enterprise);
    let e = import_err(&federation.pem(), &federation.key_pem());
    assert!(e.contains("append its issuer chain"), "{e}");

    let bundle = format!("{}{}", federation.pem(), enterprise.pem());
    let ca = IssuingCa::import(bundle.as_bytes(), federation.key_pem().as_bytes(), now()).unwrap();
    assert_eq!(ca.root_der(), enterprise.der.as_slice());
    assert_eq!(ca.chain_above().len(), 1);

    // Wrong order, and a chain that does not end in a root.
    let reversed = format!(
        "{}{}",
        federation.pem(),
        Spec::ca("stranger", Some(3)).self_signed().pem()
    );
    assert!(
        import_err(&reversed, &federation.key_pem())
            .contains("is not signed by the next certificate")
    );

    // A root with pathlen 1 leaves no room for an intermediate plus cluster CAs.
    let tight_root = Spec::ca("tight root", Some(1)).self_signed();
    let inter = Spec::ca("inter", Some(1)).signed_by(&tight_root);
    let e = import_err(
        &format!("{}{}", inter.pem(), tight_root.pem()),
        &inter.key_pem(),
    );
    assert!(e.contains("pathlen 1"), "{e}");
}

#[test]
fn cert_info_reads_a_cluster_ca() {
    let ca = root();
    let (_, issued) = issue(&ca, "east", "east.example");
    let info = CertInfo::from_der(&issued.cert_der).unwrap();
    assert_eq!(info.trust_domain.as_deref(), Some("east.example"));
    assert_eq!(info.issuer, ca.info().unwrap().subject);
}
