//! istiod on the testbed: it starts against a cluster's apiserver, the `cacerts` Secret is
//! mirrored into its `ROOT_CA_DIR` like a kubelet volume, a pod-template change of the
//! `istiod` Deployment restarts it, and nothing is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use testbed::istiod::{self, CaMode};
use testbed::process::pid_alive;
use testbed::{IstiodOptions, Testbed, TestbedOptions};

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn secret(data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("cacerts".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Secret::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_runs_mirrors_cacerts_and_restarts_on_a_template_change() {
    let tb = Testbed::start(TestbedOptions::clusters(1)).await.unwrap();
    let cluster = tb.cluster("cluster-1").unwrap().clone();
    let client = cluster.client().await.unwrap();
    let istiod = tb
        .start_istiod("cluster-1", IstiodOptions::new("example.org"))
        .await
        .unwrap();
    eprintln!(
        "istiod ready in {:?}, RSS {:?} KiB",
        istiod.ready_in(),
        istiod.rss_kib()
    );

    let again = tb
        .start_istiod("cluster-1", IstiodOptions::new("example.org"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        again.contains("istiod already runs in cluster cluster-1"),
        "{again}"
    );

    // No cacerts: its own self-signed CA. Recorded in the state file.
    assert_eq!(istiod.ca_mode(), Some(CaMode::SelfSigned));
    let pid = istiod.pid().unwrap();
    assert!(
        tb.state()
            .processes
            .iter()
            .any(|p| p.name == "cluster-1/istiod" && p.pid == pid)
    );

    // The mesh config carries the trust domain; the Deployment records the environment.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), istiod::NAMESPACE);
    let mesh = cms.get(istiod::MESH_CONFIGMAP).await.unwrap();
    assert_eq!(
        mesh.data.unwrap()[istiod::MESH_KEY],
        "trustDomain: example.org\n"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), istiod::NAMESPACE);
    let d = deployments.get(istiod::DEPLOYMENT).await.unwrap();
    let env = d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "ISTIO_MULTIROOT_MESH" && e.value.as_deref() == Some("true"))
    );

    // istiod writes its root into every namespace.
    wait_for("istio-ca-root-cert", Duration::from_secs(30), || async {
        cms.get_opt(istiod::ROOT_CERT_CONFIGMAP)
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;

    // The kubelet stand-in: created, updated, deleted.
    let dir = istiod.root_ca_dir().to_owned();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), istiod::NAMESPACE);
    secrets
        .create(&PostParams::default(), &secret(&[("a", "1"), ("b", "2")]))
        .await
        .unwrap();
    wait_for("a and b in the volume", Duration::from_secs(10), || async {
        std::fs::read_to_string(dir.join("a")).ok().as_deref() == Some("1")
            && std::fs::read_to_string(dir.join("b")).ok().as_deref() == Some("2")
    })
    .await;
    assert_eq!(
        std::fs::read_link(dir.join("a")).unwrap(),
        std::path::Path::new("..data/a")
    );
    let first = std::fs::read_link(dir.join("..data")).unwrap();
    secrets
        .replace("cacerts", &PostParams::default(), &secret(&[("a", "3")]))
        .await
        .unwrap();
    wait_for("a updated, b gone", Duration::from_secs(10), || async {
        std::fs::read_to_string(dir.join("a")).ok().as_deref() == Some("3")
            && dir.join("b").symlink_metadata().is_err()
    })
    .await;
    let second = std::fs::read_link(dir.join("..data")).unwrap();
    assert_ne!(first, second, "a new timestamped directory");
    assert!(!dir.join(&first).exists(), "the old one is removed");
    secrets
        .delete("cacerts", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("a gone", Duration::from_secs(10), || async {
        dir.join("a").symlink_metadata().is_err()
    })
    .await;

    // A change outside the pod template restarts nothing.
    let label = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
    deployments
        .patch(
            istiod::DEPLOYMENT,
            &PatchParams::default(),
            &Patch::Merge(&label),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((istiod.restarts(), istiod.pid()), (0, Some(pid)));

    // `kubectl rollout restart`: the pod template annotation changes, istiod restarts.
    let restart = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "federator.io/restartedAt": "2026-11-22T00:00:00Z"}}}}});
    deployments
        .patch(
            istiod::DEPLOYMENT,
            &PatchParams::default(),
            &Patch::Merge(&restart),
        )
        .await
        .unwrap();
    wait_for("a restart", Duration::from_secs(60), || async {
        istiod.restarts() == 1
    })
    .await;
    let new_pid = istiod.pid().unwrap();
    assert_ne!(new_pid, pid);
    assert!(!pid_alive(pid), "the old istiod is gone");
    assert!(istiod.is_running());
    assert_eq!(istiod.ca_mode(), Some(CaMode::SelfSigned));
    assert!(
        tb.state()
            .processes
            .iter()
            .any(|p| p.name == "cluster-1/istiod" && p.pid == new_pid),
        "the state file follows the restart"
    );
    eprintln!("restarted, ready in {:?}", istiod.ready_in());
    wait_for("Deployment status", Duration::from_secs(10), || async {
        let d = deployments.get_status(istiod::DEPLOYMENT).await.unwrap();
        d.status.and_then(|s| s.observed_generation) == d.metadata.generation
    })
    .await;

    // An explicit restart, then nothing is left once the testbed is gone.
    istiod.restart().await.unwrap();
    assert_eq!(istiod.restarts(), 2);
    let last = istiod.pid().unwrap();
    drop(tb);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(last) {
        assert!(Instant::now() < deadline, "istiod survived the testbed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!istiod.is_running());
}
