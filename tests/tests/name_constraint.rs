//! The opt-in trust-domain URI name constraint (`federator init --constrain-to-trust-domain`),
//! proven with real istiod and two independent verifiers, OpenSSL (whose name-constraint rules
//! Envoy's BoringSSL shares) and Go's `crypto/x509` (`tools/x509verify`): members c1 (trust
//! domain `a.example`) and c2 (`b.example`), whose bundles hold both roots.
//!
//! * istiod loads each constrained cluster CA and issues workload certificates that verify
//!   across the members in both verifiers (normal traffic passes);
//! * a leaf for `spiffe://a.example/...` minted with c2's cluster CA key (a compromised
//!   member) is rejected by both, and so is one for a subdomain of c2's own trust domain;
//! * rustls-webpki (rustls, ztunnel) rejects even the normal leaves, so an agent that sees
//!   ztunnel refuses a constrained CA and says why;
//! * turning the constraint off re-issues every member without it (and the impersonation
//!   verifies again: the constraint was what stopped it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_api::hub::Federation as FederationObject;
use federator_api::names;
use federator_core::cacerts;
use federator_core::cert::CertInfo;
use federator_e2e::*;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::istiod::CaMode;

const MEMBERS: [(&str, &str); 2] = [("c1", "a.example"), ("c2", "b.example")];

/// The trust domain the cluster CA in `files` is bound to, if any.
fn constraint_of(files: &std::collections::BTreeMap<String, Vec<u8>>) -> Option<String> {
    CertInfo::from_der(&first_cert(&files[cacerts::CA_CERT]))
        .unwrap()
        .name_constraint
}

fn chain_of(w: &mtls::WorkloadCert) -> Vec<Vec<u8>> {
    w.chain().iter().map(|c| c.to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_domain_constraint_stops_cross_domain_impersonation() {
    let mut fed = Federation::start(&MEMBERS, &["--constrain-to-trust-domain"]).await;
    let hub = fed.hub.client().await.unwrap();
    let feds: Api<FederationObject> = Api::namespaced(hub, names::NAMESPACE);
    let spec = feds.get(names::FEDERATION).await.unwrap();
    assert!(spec.spec.constrain_to_trust_domain);
    // With Vault the constraint is refused before anything is read or written.
    let out = fed.federator(&[
        "init",
        "--root",
        "vault",
        "--vault-addr",
        "http://127.0.0.1:9",
        "--constrain-to-trust-domain",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be used with --root vault"), "{err}");
    assert_eq!(
        feds.get(names::FEDERATION)
            .await
            .unwrap()
            .metadata
            .resource_version,
        spec.metadata.resource_version
    );

    fed.join_all_and_serve(true).await;
    let f1 = fed.cacerts("c1").await.unwrap();
    let f2 = fed.cacerts("c2").await.unwrap();
    assert_eq!(constraint_of(&f1).as_deref(), Some("a.example"));
    assert_eq!(constraint_of(&f2).as_deref(), Some("b.example"));

    // Real istiod loads each constrained CA as its plug-in CA and issues from it.
    let i1 = fed.start_istiod("c1", "a.example").await;
    let i2 = fed.start_istiod("c2", "b.example").await;
    for i in [&i1, &i2] {
        assert_eq!(i.ca_mode(), Some(CaMode::PlugIn), "{}", i.current_log());
    }
    let ttl = Duration::from_secs(3600);
    let (c1, c2) = (
        fed.members["c1"].cluster.clone(),
        fed.members["c2"].cluster.clone(),
    );
    let w1 = request_workload_cert(&c1, &i1, "shop", "web", ttl)
        .await
        .unwrap();
    let w2 = request_workload_cert(&c2, &i2, "shop", "web", ttl)
        .await
        .unwrap();
    assert_eq!(w1.spiffe_id, "spiffe://a.example/ns/shop/sa/web");
    // Normal traffic: each istiod-issued leaf verifies against the other member's roots.
    for (w, peer) in [(&w1, &f2), (&w2, &f1)] {
        let chain = chain_of(w);
        let roots = &peer[cacerts::ROOT_CERT];
        openssl_verify_chain(&chain, roots)
            .unwrap_or_else(|e| panic!("openssl refused {}: {e}", w.spiffe_id));
        go_verify_chain(&chain, roots)
            .unwrap_or_else(|e| panic!("Go refused {}: {e}", w.spiffe_id));
        // rustls-webpki (ztunnel's verifier) fails closed below a URI name constraint.
        let err = verifies(&chain, peer).unwrap_err();
        assert!(err.contains("NameConstraintViolation"), "{err}");
    }

    // c2 is compromised: its cluster CA key mints identities of trust domain a.example.
    let forged = mint_leaf(&f2, "spiffe://a.example/ns/payments/sa/api");
    let roots1 = &f1[cacerts::ROOT_CERT];
    let openssl = openssl_verify_chain(&forged, roots1).unwrap_err();
    assert!(openssl.contains("permitted subtree violation"), "{openssl}");
    let go = go_verify_chain(&forged, roots1).unwrap_err();
    assert!(go.contains("not authorized"), "{go}");
    // A subdomain of its own trust domain is another trust domain too: Go reads the permitted
    // host as "and its subdomains", so the excluded subtree is what refuses it there.
    let sub = mint_leaf(&f2, "spiffe://east.b.example/ns/shop/sa/web");
    openssl_verify_chain(&sub, roots1).unwrap_err();
    let go = go_verify_chain(&sub, roots1).unwrap_err();
    assert!(go.contains("not authorized"), "{go}");
    // c2's own identities still verify from the stolen key: the constraint limits the blast
    // radius to the compromised member's trust domain.
    let own = mint_leaf(&f2, "spiffe://b.example/ns/shop/sa/other");
    openssl_verify_chain(&own, roots1).unwrap();
    go_verify_chain(&own, roots1).unwrap();

    // ztunnel appears in c2: the agent keeps its installed CA, refuses a new constrained one,
    // and says what to do, on c2 and on the hub.
    let ztunnel: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": names::ZTUNNEL_DAEMONSET, "namespace": names::ISTIO_NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "ztunnel"}},
            "template": {
                "metadata": {"labels": {"app": "ztunnel"}},
                "spec": {"containers": [{"name": "istio-proxy", "image": "istio/ztunnel"}]}
            }
        }
    }))
    .unwrap();
    let c2_client = c2.client().await.unwrap();
    let daemonsets: Api<DaemonSet> = Api::namespaced(c2_client, names::ISTIO_NAMESPACE);
    daemonsets
        .create(&PostParams::default(), &ztunnel)
        .await
        .unwrap();
    fed.federator_ok(&["renew", "cluster", "c2"]);
    let problems = wait_for(
        "c2's agent to refuse the constrained CA next to ztunnel",
        Duration::from_secs(60),
        || async {
            let status = fed.cluster_trust("c2").await?.status?;
            let p = status.problems.join("; ");
            (p.contains("runs ztunnel") && p.contains("not acceptable")).then_some(p)
        },
    )
    .await;
    assert!(problems.contains("constrainToTrustDomain"), "{problems}");
    assert!(
        problems.contains("installed cluster CA carries"),
        "{problems}"
    );
    wait_for(
        "the hub to mirror the refusal",
        Duration::from_secs(30),
        || async {
            let s = fed.member_cluster("c2").await?.status?;
            s.problems
                .iter()
                .any(|p| p.contains("ztunnel"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        fed.cacerts("c2").await.unwrap(),
        f2,
        "c2's cacerts changed next to ztunnel"
    );

    // The constraint off: every member is re-issued without it, c2 too (ztunnel or not).
    feds.patch(
        names::FEDERATION,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"constrainToTrustDomain": false}})),
    )
    .await
    .unwrap();
    for (name, _) in MEMBERS {
        wait_for(
            &format!("{name} to run on a cluster CA without the constraint"),
            Duration::from_secs(90),
            || async {
                let files = fed.cacerts(name).await?;
                constraint_of(&files).is_none().then_some(())
            },
        )
        .await;
    }
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(60))
        .await;
    // Without it, the stolen key's forgery verifies again: what stopped it was the constraint.
    let f1 = fed.cacerts("c1").await.unwrap();
    let f2 = fed.cacerts("c2").await.unwrap();
    let forged = mint_leaf(&f2, "spiffe://a.example/ns/payments/sa/api");
    openssl_verify_chain(&forged, &f1[cacerts::ROOT_CERT]).unwrap();
    go_verify_chain(&forged, &f1[cacerts::ROOT_CERT]).unwrap();
    daemonsets
        .delete(names::ZTUNNEL_DAEMONSET, &DeleteParams::default())
        .await
        .unwrap();
}
