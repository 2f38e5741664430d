//! Two hub replicas with leader election: only the Lease holder acts, and when it is killed the
//! other takes over. The hub also renews its own token for a member before it expires.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_api::names;
use federator_e2e::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use testbed::{Process, ProcessSpec};

fn replica(fed: &Federation, id: &str) -> Process {
    let spec = ProcessSpec::new(
        format!("serve-{id}"),
        bin("federator"),
        fed.dir.join(format!("serve-{id}.log")),
    )
    .args([
        "serve",
        "--leader-elect",
        "--identity",
        id,
        "--heartbeat",
        "3s",
        "--log-level",
        "info",
    ])
    .env("FEDERATOR_HUB_KUBECONFIG", fed.hub.kubeconfig_path());
    Process::spawn(spec).unwrap()
}

async fn holder(fed: &Federation) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(fed.hub.client().await.ok()?, names::NAMESPACE);
    leases
        .get_opt(names::LEADER_LEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_acts_and_a_follower_takes_over() {
    let mut fed = Federation::start(&[("c1", "cluster.local"), ("c2", "cluster.local")], &[]).await;
    fed.join("c1");
    let mut a = replica(&fed, "replica-a");
    let mut b = replica(&fed, "replica-b");
    fed.start_agent("c1");
    fed.wait_healthy(&["c1"], Duration::from_secs(60)).await;

    let leader = wait_for("a Lease holder", Duration::from_secs(30), || holder(&fed)).await;
    let (leader_proc, follower_proc, follower) = if leader == "replica-a" {
        (&mut a, &mut b, "replica-b")
    } else {
        (&mut b, &mut a, "replica-a")
    };
    assert!(
        follower_proc
            .log_tail(50)
            .contains("waiting for leadership")
    );
    assert!(
        !follower_proc.log_tail(200).contains("signed a cluster CA"),
        "only the leader signs"
    );

    // The hub renews its token for c1 when two thirds of its lifetime have passed: pretend it
    // was issued long ago.
    let secrets: Api<Secret> = Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    let cred = names::member_credential_secret("c1");
    let before = secrets.get(&cred).await.unwrap().data.unwrap()[names::KUBECONFIG_KEY].clone();
    let patch = serde_json::json!({ "metadata": { "annotations": { "federator.io/token-issued": "2000-01-01T00:00:00Z" } } });
    secrets
        .patch(&cred, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        "the hub to renew its token for c1",
        Duration::from_secs(30),
        || async {
            let s = secrets.get(&cred).await.ok()?;
            (s.data?[names::KUBECONFIG_KEY] != before).then_some(())
        },
    )
    .await;
    let renewed = wait_for(
        "the issue time to be recorded",
        Duration::from_secs(10),
        || async {
            let s = secrets.get(&cred).await.ok()?;
            let issued = s
                .metadata
                .annotations
                .clone()?
                .get("federator.io/token-issued")?
                .clone();
            (issued != "2000-01-01T00:00:00Z").then_some(s)
        },
    )
    .await;
    let yaml = String::from_utf8(renewed.data.unwrap()[names::KUBECONFIG_KEY].0.clone()).unwrap();
    let client = testbed::cluster::client_from_yaml(&yaml).await.unwrap();
    let trusts: Api<federator_api::member::ClusterTrust> =
        Api::namespaced(client, names::NAMESPACE);
    trusts
        .get(names::CLUSTER_TRUST)
        .await
        .expect("the renewed token works");

    // Kill the leader: the follower takes the Lease and serves a new member.
    leader_proc.kill();
    wait_for(
        "the follower to take the Lease",
        Duration::from_secs(45),
        || async { (holder(&fed).await.as_deref() == Some(follower)).then_some(()) },
    )
    .await;
    fed.join("c2");
    fed.start_agent("c2");
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(60))
        .await;
    assert!(follower_proc.log_tail(400).contains("became the leader"));
}
