//! Trust bundles with real certificates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_core::bundle::TrustBundle;
use federator_core::identity::SpiffeId;
use federator_testkit::pki;

#[test]
fn refuses_non_ca_roots() {
    let cacerts = pki::cacerts(&pki::default_root(), "c1", "a.local");
    let leaf = cacerts
        .issue_workload_cert(
            &SpiffeId::parse("spiffe://a.local/ns/x/sa/y").unwrap(),
            Duration::from_secs(60),
            pki::now(),
        )
        .unwrap();
    let err = TrustBundle::new()
        .add(&pki::td("a.local"), leaf.chain[0].clone())
        .unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
}
