//! The transitions an operator looks for are Kubernetes Events: on the hub, the Federation's
//! bundle and each MemberCluster's signing, bundle and renewal; in each member, what the agent
//! did to its ClusterTrust. A problem already reported is not published again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_api::names;
use federator_e2e::*;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// `reason` of every event about the object of `kind` named `name` in `federator-system`.
async fn reasons(client: &Client, kind: &str, name: &str) -> Vec<String> {
    events_about(client, kind, name)
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect()
}

/// Waits until the object has an event of every reason in `wanted`.
async fn wait_reasons(client: &Client, kind: &str, name: &str, wanted: &[&str]) -> Vec<String> {
    wait_for(
        &format!("events {wanted:?} on {kind} {name}"),
        Duration::from_secs(60),
        || async {
            let seen = reasons(client, kind, name).await;
            wanted
                .iter()
                .all(|w| seen.iter().any(|s| s == w))
                .then_some(seen)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_are_recorded_as_events() {
    let mut fed = Federation::start(
        &[("c1", "cluster.local")],
        &["--cluster-ca-ttl", "30s", "--renew-at-percent", "50"],
    )
    .await;
    fed.join_all_and_serve(false).await;
    let hub = fed.hub.client().await.unwrap();
    let member = fed.members["c1"].cluster.client().await.unwrap();

    wait_reasons(&hub, "Federation", names::FEDERATION, &["BundleChanged"]).await;
    // Signed, sent the bundle, and (at half of 30 s) renewed, then signed again.
    let mc = ["CsrSigned", "BundleUpdated", "RenewalRequested"];
    wait_reasons(&hub, "MemberCluster", "c1", &mc).await;
    let ct = ["CsrCreated", "ChainAccepted", "CacertsWritten"];
    wait_reasons(&member, "ClusterTrust", names::CLUSTER_TRUST, &ct).await;

    // A CSR the hub refuses (a digest that does not match) is reported once as a warning,
    // not again at every reconcile. The test plays the agent from here on.
    fed.members.get_mut("c1").unwrap().agent = None;
    let trusts: Api<federator_api::member::ClusterTrust> =
        Api::namespaced(member.clone(), names::NAMESPACE);
    let ct = trusts.get(names::CLUSTER_TRUST).await.unwrap();
    let mut csr = ct.status.unwrap().csr.unwrap();
    csr.generation = ct.spec.csr_generation + 1;
    csr.digest = "00".repeat(32);
    let merge = |body: serde_json::Value| {
        let trusts = trusts.clone();
        async move {
            let pp = PatchParams::default();
            if body.get("spec").is_some() {
                trusts
                    .patch(names::CLUSTER_TRUST, &pp, &Patch::Merge(&body))
                    .await
            } else {
                trusts
                    .patch_status(names::CLUSTER_TRUST, &pp, &Patch::Merge(&body))
                    .await
            }
            .unwrap();
        }
    };
    merge(json!({ "spec": { "csrGeneration": csr.generation } })).await;
    merge(json!({ "status": { "csr": csr } })).await;
    let refused = || async {
        let api: Api<Event> = Api::namespaced(hub.clone(), names::NAMESPACE);
        let events = api.list(&ListParams::default()).await.unwrap().items;
        let refused: Vec<Event> = events
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("CsrRefused"))
            .collect();
        (!refused.is_empty()).then_some(refused)
    };
    let first = wait_for("a CsrRefused event", Duration::from_secs(60), refused).await;
    assert!(
        first[0].note.as_deref().unwrap().contains("digest"),
        "{first:?}"
    );
    // Each status change makes the hub reconcile and refuse again.
    for poke in ["one", "two"] {
        merge(json!({ "status": { "problems": [format!("poke {poke}")] } })).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let after = refused().await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after[0].series.is_none(),
        "the warning was published again: {:?}",
        after[0].series
    );
}
