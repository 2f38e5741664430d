//! `federator doctor` against a real kube-apiserver and a real istiod 1.27.9 (a version that
//! compares roots by substring and does not clamp workload certificates): before Istio, before
//! the join, with a broken `cacerts` and with someone else's, and joined, with the mesh
//! config's trust domain and `PROXY_CONFIG_XDS_AGENT` — and it never writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_api::names;
use federator_e2e::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

/// Runs `doctor -o json` on the member; returns the exit code and the findings.
fn doctor(fed: &Federation, name: &str) -> (i32, Vec<serde_json::Value>) {
    let kubeconfig = fed.members[name].cluster.kubeconfig_path();
    let out = fed.federator(&[
        "doctor",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor output is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap(),
        v["findings"].as_array().unwrap().clone(),
    )
}

fn has(findings: &[serde_json::Value], level: &str, subject: &str, needle: &str) -> bool {
    findings.iter().any(|f| {
        f["level"] == level
            && f["subject"] == subject
            && f["message"].as_str().unwrap().contains(needle)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_applies_the_running_istiods_rules_and_writes_nothing() {
    let mut fed = Federation::start_on(
        "cluster-1",
        &[("cluster-1", "cluster.local")],
        &["--cluster-ca-ttl", "12h"],
        None,
    )
    .await;
    let cluster = fed.members["cluster-1"].cluster.clone();

    // No Istio, not joined: facts only, exit 0.
    let (code, f) = doctor(&fed, "cluster-1");
    assert_eq!(code, 0, "{f:#?}");
    assert!(has(&f, "ok", "federation", "not joined"), "{f:#?}");
    assert!(has(&f, "ok", "cacerts", "self-signed CA"), "{f:#?}");

    // istiod 1.27.9, self-signed: its version's rules are named.
    let istiod = fed
        .start_istiod_version("cluster-1", "cluster.local", "1.27.9")
        .await;
    let (code, f) = doctor(&fed, "cluster-1");
    assert_eq!(code, 0, "{f:#?}");
    assert!(
        has(
            &f,
            "ok",
            "istiod",
            "version 1.27.9: compares a changed root-cert.pem by raw-byte substring"
        ),
        "{f:#?}"
    );
    assert!(
        has(
            &f,
            "ok",
            "istiod",
            "clamps workload certificates to the cluster CA: no"
        ),
        "{f:#?}"
    );
    assert!(
        has(&f, "ok", "istiod", "ISTIO_MULTIROOT_MESH=true"),
        "{f:#?}"
    );

    // A partial cacerts: a problem naming the missing files, exit 1, and nothing written.
    let secrets: Api<Secret> =
        Api::namespaced(cluster.client().await.unwrap(), names::ISTIO_NAMESPACE);
    let root = federator_testkit::pki::root("cluster.local");
    let files = federator_testkit::pki::cacerts(&root, "cluster-1", "cluster.local").files();
    let cacerts_secret = |names_: &[&str]| Secret {
        metadata: ObjectMeta {
            name: Some(names::CACERTS_SECRET.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            names_
                .iter()
                .map(|n| ((*n).to_owned(), ByteString(files[*n].clone())))
                .collect(),
        ),
        ..Secret::default()
    };
    let partial = cacerts_secret(&["ca-cert.pem"]);
    let created = secrets
        .create(&PostParams::default(), &partial)
        .await
        .unwrap();
    let (code, f) = doctor(&fed, "cluster-1");
    assert_eq!(code, 1, "{f:#?}");
    assert!(
        has(&f, "problem", "cacerts", "root-cert.pem: missing"),
        "{f:#?}"
    );
    assert!(
        has(&f, "problem", "cacerts", "ca-key.pem: missing"),
        "{f:#?}"
    );
    let after = secrets.get(names::CACERTS_SECRET).await.unwrap();
    assert_eq!(
        after.metadata.resource_version, created.metadata.resource_version,
        "doctor wrote nothing"
    );
    secrets
        .delete(names::CACERTS_SECRET, &DeleteParams::default())
        .await
        .unwrap();

    // A valid cacerts someone else wrote: join would replace it, so doctor says so (and how to
    // keep it), without calling it a problem.
    let foreign = cacerts_secret(&files.keys().map(String::as_str).collect::<Vec<_>>());
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let (code, f) = doctor(&fed, "cluster-1");
    assert_eq!(code, 0, "{f:#?}");
    assert!(
        has(&f, "warning", "cacerts", "federator did not write it"),
        "{f:#?}"
    );
    secrets
        .delete(names::CACERTS_SECRET, &DeleteParams::default())
        .await
        .unwrap();

    // Joined: the agent installs cacerts and restarts istiod into plug-in mode; doctor sees
    // the federation, valid cacerts, istiod serving its roots, and — a 12 h cluster CA on a
    // version that does not clamp, with 24 h workload certificates — the outliving warning.
    fed.join("cluster-1");
    fed.start_serve(&[]);
    fed.start_agent("cluster-1");
    fed.wait_healthy(&["cluster-1"], Duration::from_secs(90))
        .await;
    let f = wait_for(
        "doctor to see istiod serving the installed roots",
        Duration::from_secs(90),
        || async {
            let (code, f) = doctor(&fed, "cluster-1");
            (code == 0 && has(&f, "ok", "published roots", "it has loaded them")).then_some(f)
        },
    )
    .await;
    assert!(
        istiod.restarts() >= 1,
        "the agent restarted istiod into plug-in mode"
    );
    assert!(
        has(
            &f,
            "ok",
            "federation",
            "joined as cluster-1 in trust domain cluster.local"
        ),
        "{f:#?}"
    );
    assert!(has(&f, "ok", "cacerts", "valid: cluster CA"), "{f:#?}");
    assert!(
        has(
            &f,
            "warning",
            "cacerts",
            "does not clamp workload certificates"
        ),
        "{f:#?}"
    );
    assert!(
        f.iter().all(|x| x["level"] != "problem"),
        "no problem once joined: {f:#?}"
    );

    // The mesh config: the cluster's trust domain is fine, PROXY_CONFIG_XDS_AGENT missing is
    // a warning; another trust domain is a problem naming the fix. (The testbed's istiod
    // keeps the mesh config in ConfigMap istio-system/istio.)
    let (code, f) = doctor(&fed, "cluster-1");
    assert_eq!(code, 0, "{f:#?}");
    assert!(
        has(&f, "ok", "mesh config", "trustDomain cluster.local"),
        "{f:#?}"
    );
    assert!(
        has(
            &f,
            "warning",
            "mesh config",
            "PROXY_CONFIG_XDS_AGENT is not"
        ),
        "{f:#?}"
    );
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cluster.client().await.unwrap(), names::ISTIO_NAMESPACE);
    let mesh = "trustDomain: elsewhere.example\ndefaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: \"true\"\n";
    let patch = serde_json::json!({ "data": { names::MESH_KEY: mesh } });
    configmaps
        .patch(
            names::ISTIO_CONFIGMAP,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let (code, f) = doctor(&fed, "cluster-1");
    assert_eq!(code, 1, "{f:#?}");
    assert!(
        has(
            &f,
            "problem",
            "mesh config",
            "trustDomain is elsewhere.example but the cluster joins (or joined) the federation in cluster.local"
        ),
        "{f:#?}"
    );
    assert!(
        has(&f, "ok", "mesh config", "PROXY_CONFIG_XDS_AGENT=true"),
        "{f:#?}"
    );
}
