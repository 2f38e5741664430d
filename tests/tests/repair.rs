//! Bad input is refused or repaired: a CSR that asks for another trust domain or a longer path
//! is refused with the reason in status; a hand-edited `cacerts` is put back; a revoked hub
//! credential is reported, and joining again repairs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_api::member::{ClusterTrust, CsrStatus};
use federator_api::names;
use federator_core::csr::CsrInfo;
use federator_e2e::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

fn rogue_csr(f: impl FnOnce(&mut CertificateParams)) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "c1 intermediate CA");
    p.subject_alt_names = vec![SanType::URI("spiffe://cluster.local".try_into().unwrap())];
    f(&mut p);
    p.serialize_request(&key).unwrap().pem().unwrap()
}

async fn publish(fed: &Federation, csr: &str) {
    let api: Api<ClusterTrust> = Api::namespaced(
        fed.members["c1"].cluster.client().await.unwrap(),
        names::NAMESPACE,
    );
    let ct = api.get(names::CLUSTER_TRUST).await.unwrap();
    let status = CsrStatus {
        generation: ct.spec.csr_generation,
        pem: csr.to_owned(),
        digest: CsrInfo::parse(csr.as_bytes()).unwrap().digest(),
    };
    let patch = serde_json::json!({ "status": { "csr": status } });
    api.patch_status(
        names::CLUSTER_TRUST,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

async fn hub_problem(fed: &Federation, fragment: &str) -> String {
    wait_for(
        &format!("the hub to report {fragment:?}"),
        Duration::from_secs(30),
        || async {
            let m = fed.member_cluster("c1").await?;
            let problems = m.status?.problems.join("; ");
            problems.contains(fragment).then_some(problems)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_greedy_csrs_repairs_cacerts_and_reports_revoked_credentials() {
    let mut fed = Federation::start(&[("c1", "cluster.local")], &[]).await;
    fed.join("c1");
    // A short heartbeat: the hub re-reads the member (proving its credential) every 3s.
    fed.start_serve(&["--heartbeat", "3s"]);

    // Before the agent runs, play a rogue agent: CSRs asking for more than the policy grants.
    publish(
        &fed,
        &rogue_csr(|p| {
            p.subject_alt_names = vec![SanType::URI("spiffe://other.example".try_into().unwrap())]
        }),
    )
    .await;
    hub_problem(
        &fed,
        "asks for trust domain other.example but cluster c1 is in trust domain cluster.local",
    )
    .await;
    publish(
        &fed,
        &rogue_csr(|p| p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1))),
    )
    .await;
    let problems = hub_problem(&fed, "asks for path length 1").await;
    assert!(
        !problems.contains("other.example"),
        "the old refusal is gone: {problems}"
    );
    assert!(
        fed.cluster_trust("c1").await.unwrap().spec.signed.is_none(),
        "nothing was signed"
    );
    let out = fed.federator(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("asks for path length 1"));

    // The real agent replaces the rogue CSR and the member becomes healthy.
    fed.start_agent("c1");
    fed.wait_healthy(&["c1"], Duration::from_secs(60)).await;
    let good = fed.cacerts("c1").await.unwrap();

    // Hand edits to cacerts are repaired: garbage in a file, an extra istio-generated key.
    let secrets: Api<Secret> = Api::namespaced(
        fed.members["c1"].cluster.client().await.unwrap(),
        names::ISTIO_NAMESPACE,
    );
    let mut s = secrets.get(names::CACERTS_SECRET).await.unwrap();
    let data = s.data.as_mut().unwrap();
    data.insert("ca-cert.pem".into(), ByteString(b"garbage".to_vec()));
    data.insert("istio-generated".into(), ByteString(Vec::new()));
    s.metadata.managed_fields = None;
    secrets
        .replace(names::CACERTS_SECRET, &Default::default(), &s)
        .await
        .unwrap();
    wait_for(
        "cacerts to be repaired",
        Duration::from_secs(30),
        || async { (fed.cacerts("c1").await? == good).then_some(()) },
    )
    .await;
    // Deleted entirely: restored too.
    secrets
        .delete(names::CACERTS_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "cacerts to be recreated",
        Duration::from_secs(30),
        || async { (fed.cacerts("c1").await? == good).then_some(()) },
    )
    .await;

    // Revoke the hub's credential in the member: status says so, join again repairs it.
    let sas: Api<ServiceAccount> = Api::namespaced(
        fed.members["c1"].cluster.client().await.unwrap(),
        names::NAMESPACE,
    );
    sas.delete(names::HUB_SERVICE_ACCOUNT, &DeleteParams::default())
        .await
        .unwrap();
    hub_problem(&fed, "credential was rejected").await;
    let out = fed.federator(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("run `federator join cluster c1` again"));
    fed.join("c1");
    wait_for(
        "the member to be healthy again",
        Duration::from_secs(60),
        || async {
            let m = fed.member_cluster("c1").await?;
            let s = m.status?;
            (s.problems.is_empty() && federator_api::condition::is_true(&s.conditions, "Ready"))
                .then_some(())
        },
    )
    .await;
}
