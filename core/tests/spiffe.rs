//! SPIFFE bundle documents against the specifications (SPIFFE Trust Domain and Bundle §4,
//! X509-SVID §6, JWT-SVID §6) and SPIRE's stricter decoding (`bundleutil.Decode`, go-jose).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use federator_core::bundle::TrustBundle;
use federator_core::ca::RootOptions;
use federator_core::identity::SpiffeId;
use federator_core::key::KeyAlgorithm;
use federator_core::spiffe::{
    BundleError, MAX_BUNDLE_BYTES, MAX_KEYS, parse_anchors, parse_bundle,
};
use federator_testkit::pki;
use serde_json::{Value, json};

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// Our own document for `roots` of `td`, as JSON.
fn written(td: &str, roots: &[Vec<u8>], sequence: i64, hint: Option<u64>) -> Value {
    let mut b = TrustBundle::new();
    for r in roots {
        b.add(&pki::td(td), r.clone()).unwrap();
    }
    let mut sb = b.spiffe_bundle(&pki::td(td), sequence).unwrap();
    sb.spiffe_refresh_hint = hint;
    serde_json::to_value(&sb).unwrap()
}

fn parse(v: &Value, td: &str) -> Result<federator_core::spiffe::ForeignBundle, BundleError> {
    parse_bundle(serde_json::to_string(v).unwrap().as_bytes(), &pki::td(td))
}

fn root(alg: KeyAlgorithm) -> Vec<u8> {
    pki::root_with(&RootOptions {
        key_algorithm: alg,
        ..RootOptions::default()
    })
    .root_der()
    .to_vec()
}

const JWT_KEY: &str = r#"{"use": "jwt-svid", "kty": "EC", "kid": "spire-jwt-1", "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

#[test]
fn what_federator_writes_reads_back_for_every_key_type() {
    let roots = [
        root(KeyAlgorithm::EcdsaP256),
        root(KeyAlgorithm::EcdsaP384),
        root(KeyAlgorithm::Rsa2048),
    ];
    let doc = written("a.test", &roots, 7, Some(300));
    // X509-SVID §6.1: use x509-svid, no kid, exactly one certificate in x5c.
    for k in doc["keys"].as_array().unwrap() {
        assert_eq!(k["use"], "x509-svid");
        assert!(k.get("kid").is_none());
        assert_eq!(k["x5c"].as_array().unwrap().len(), 1);
    }
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let got = parse(&doc, "a.test").unwrap();
    let mut want = roots.to_vec();
    want.sort_by_key(|d| federator_core::cert::fingerprint(d));
    let mut have = got.x509_authorities.clone();
    have.sort_by_key(|d| federator_core::cert::fingerprint(d));
    assert_eq!(have, want);
    assert_eq!(got.sequence, Some(7));
    assert_eq!(got.refresh_hint, Some(Duration::from_secs(300)));
    assert!(got.jwt_authorities.is_empty() && got.skipped.is_empty());
}

#[test]
fn a_spire_style_bundle_with_a_jwt_authority() {
    let r = root(KeyAlgorithm::EcdsaP256);
    let mut doc = written("spire.test", std::slice::from_ref(&r), 3, Some(5));
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::from_str(JWT_KEY).unwrap());
    let got = parse(&doc, "spire.test").unwrap();
    assert_eq!(got.x509_authorities, vec![r]);
    assert_eq!(got.jwt_authorities, ["spire-jwt-1"]);
    // Without sequence and hint (both are SHOULDs, §4.1.1, §4.1.2).
    doc.as_object_mut().unwrap().remove("spiffe_sequence");
    doc.as_object_mut().unwrap().remove("spiffe_refresh_hint");
    let got = parse(&doc, "spire.test").unwrap();
    assert_eq!((got.sequence, got.refresh_hint), (None, None));
}

/// SPIRE's decoder refuses a key without `use` and a jwt-svid key without `kid`; so does
/// federator, naming the key.
#[test]
fn spire_strictness_use_and_kid() {
    let r = root(KeyAlgorithm::EcdsaP256);
    let mut doc = written("a.test", &[r], 1, None);
    doc["keys"][0].as_object_mut().unwrap().remove("use");
    let err = parse(&doc, "a.test").unwrap_err();
    assert!(
        matches!(&err, BundleError::Key { index: 0, reason } if reason.contains("no \"use\"")),
        "{err}"
    );

    let mut jwt: Value = serde_json::from_str(JWT_KEY).unwrap();
    jwt.as_object_mut().unwrap().remove("kid");
    let err = parse(&json!({"keys": [jwt]}), "a.test").unwrap_err();
    assert!(err.to_string().contains("\"kid\""), "{err}");
    let mut jwt: Value = serde_json::from_str(JWT_KEY).unwrap();
    jwt["kid"] = json!("");
    assert!(parse(&json!({"keys": [jwt]}), "a.test").is_err());
}

/// §4.2.1, §4.2.2: a key of unknown use, or an X.509 authority of unknown key type, is
/// ignored (and said so), not an error.
#[test]
fn unknown_uses_and_key_types_are_skipped() {
    let r = root(KeyAlgorithm::EcdsaP256);
    let mut doc = written("a.test", std::slice::from_ref(&r), 1, None);
    let mut odd = doc["keys"][0].clone();
    odd["kty"] = json!("QUANTUM");
    doc["keys"].as_array_mut().unwrap().push(odd);
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"use": "future-svid", "kty": "EC"}));
    let got = parse(&doc, "a.test").unwrap();
    assert_eq!(got.x509_authorities, vec![r]);
    assert_eq!(got.skipped.len(), 2, "{:?}", got.skipped);
    assert!(got.skipped[1].contains("future-svid"));
}

#[test]
fn x509_authorities_carry_exactly_one_ca_certificate() {
    let r = root(KeyAlgorithm::EcdsaP256);
    let other = root(KeyAlgorithm::EcdsaP256);
    let base = written("a.test", std::slice::from_ref(&r), 1, None);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut d = base.clone();
        f(&mut d["keys"][0]);
        parse(&d, "a.test").unwrap_err().to_string()
    };
    assert!(with(&|k| k["x5c"] = json!([])).contains("exactly one"));
    assert!(with(&|k| k["x5c"] = json!([b64(&r), b64(&r)])).contains("exactly one"));
    assert!(
        with(&|k| {
            k.as_object_mut().unwrap().remove("x5c");
        })
        .contains("x5c")
    );
    assert!(with(&|k| k["x5c"] = json!(["%%%"])).contains("base64"));
    assert!(with(&|k| k["x5c"] = json!([b64(b"not a certificate")])).contains("X.509"));
    // The key parameters must be the certificate's (go-jose checks this too).
    let theirs = written("a.test", std::slice::from_ref(&other), 1, None);
    assert!(with(&|k| k["x"] = theirs["keys"][0]["x"].clone()).contains("not the public key"));
    assert!(with(&|k| k["kty"] = json!("RSA")).contains("not the public key"));
    assert!(
        with(&|k| {
            k.as_object_mut().unwrap().remove("kty");
        })
        .contains("kty")
    );
    assert!(with(&|k| k["use"] = json!(5)).contains("must be a string"));
}

#[test]
fn refuses_a_non_ca_key() {
    let cacerts = pki::cacerts(&pki::default_root(), "c1", "a.test");
    let leaf = cacerts
        .issue_workload_cert(
            &SpiffeId::parse("spiffe://a.test/ns/x/sa/y").unwrap(),
            Duration::from_secs(60),
            pki::now(),
        )
        .unwrap()
        .chain[0]
        .clone();
    // A JWK whose x5c is a workload certificate (a leaf), with its own key parameters.
    let mut doc = written("a.test", &[root(KeyAlgorithm::EcdsaP256)], 1, None);
    let key = federator_core::spiffe::public_jwk(&leaf).unwrap();
    let k = &mut doc["keys"][0];
    k["x5c"] = json!([b64(&leaf)]);
    k["x"] = json!(key.x);
    k["y"] = json!(key.y);
    let err = parse(&doc, "a.test").unwrap_err();
    assert!(err.to_string().contains("is not a CA certificate"), "{err}");
    assert!(parse_anchors(pki::pem(&leaf).as_bytes(), &pki::td("a.test")).is_err());
}

/// A CA certificate whose SPIFFE ID names another trust domain is refused; one of the
/// trust domain itself (a SPIRE root, a cluster CA) is accepted.
#[test]
fn refuses_a_ca_of_another_trust_domain() {
    let ca = pki::default_root();
    let (_, other) = pki::issue(&ca, "c1", "other.test");
    let (_, own) = pki::issue(&ca, "c1", "a.test");
    let doc = written("a.test", std::slice::from_ref(&other.cert_der), 1, None);
    let err = parse(&doc, "a.test").unwrap_err();
    assert!(
        matches!(&err, BundleError::WrongTrustDomain { found, expected, .. } if found == "other.test" && expected == "a.test"),
        "{err}"
    );
    assert!(err.to_string().contains("not of a.test"), "{err}");
    let doc = written("a.test", std::slice::from_ref(&own.cert_der), 1, None);
    assert_eq!(parse(&doc, "a.test").unwrap().x509_authorities.len(), 1);
    let err = parse_anchors(pki::pem(&other.cert_der).as_bytes(), &pki::td("a.test")).unwrap_err();
    assert!(matches!(err, BundleError::WrongTrustDomain { .. }), "{err}");
}

#[test]
fn refuses_huge_documents_and_too_many_keys() {
    let huge = format!(
        r#"{{"keys": [], "padding": "{}"}}"#,
        "x".repeat(MAX_BUNDLE_BYTES)
    );
    let err = parse_bundle(huge.as_bytes(), &pki::td("a.test")).unwrap_err();
    assert!(matches!(err, BundleError::TooLarge { .. }), "{err}");
    let r = root(KeyAlgorithm::EcdsaP256);
    let one = written("a.test", &[r], 1, None)["keys"][0].clone();
    let many = json!({"keys": vec![one; MAX_KEYS + 1]});
    let err = parse(&many, "a.test").unwrap_err();
    assert_eq!(err, BundleError::TooManyKeys(MAX_KEYS + 1));
}

#[test]
fn refuses_garbage() {
    let td = pki::td("a.test");
    for garbage in [
        &b"<html>502 Bad Gateway</html>"[..],
        b"",
        b"[]",
        b"{}",
        br#"{"keys": 3}"#,
        br#"{"keys": [1]}"#,
        br#"{"keys": [], "keys": []}"#,
        br#"{"keys": [{"use": "x509-svid", "use": "jwt-svid"}]}"#,
        br#"{"keys": [], "spiffe_sequence": -1}"#,
        br#"{"keys": [], "spiffe_sequence": "7"}"#,
        br#"{"keys": [], "spiffe_refresh_hint": 1.5}"#,
        &[0xff, 0xfe, 0x00],
    ] {
        let err = parse_bundle(garbage, &td);
        assert!(
            err.is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(garbage)
        );
    }
}

/// §4.1.3: an empty key set is a valid bundle: the trust domain revoked its keys.
#[test]
fn an_empty_key_set_is_a_revocation() {
    let got = parse_bundle(br#"{"keys": [], "spiffe_sequence": 9}"#, &pki::td("a.test")).unwrap();
    assert!(got.x509_authorities.is_empty());
    assert_eq!(got.sequence, Some(9));
}

#[test]
fn the_same_root_twice_counts_once() {
    let r = root(KeyAlgorithm::EcdsaP256);
    let mut doc = written("a.test", &[r], 1, None);
    let k = doc["keys"][0].clone();
    doc["keys"].as_array_mut().unwrap().push(k);
    assert_eq!(parse(&doc, "a.test").unwrap().x509_authorities.len(), 1);
}

#[test]
fn anchors_from_pem_or_json() {
    let r = root(KeyAlgorithm::EcdsaP384);
    let td = pki::td("a.test");
    assert_eq!(
        parse_anchors(pki::pem(&r).as_bytes(), &td).unwrap(),
        vec![r.clone()]
    );
    let json =
        serde_json::to_string(&written("a.test", std::slice::from_ref(&r), 1, None)).unwrap();
    assert_eq!(parse_anchors(json.as_bytes(), &td).unwrap(), vec![r]);
    assert!(parse_anchors(b"garbage", &td).is_err());
}
