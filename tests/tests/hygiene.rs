//! The secret-hygiene scan that runs after every end-to-end test (`federator_e2e::hygiene`)
//! finds what it is there to find: a federation with a running agent is clean, then a private
//! key put in a ConfigMap, a kubeconfig with a client key in a Secret, and the agent's own key
//! written as hex into a log file are each reported — and the federation is clean again once
//! they are gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use federator_api::names;
use federator_e2e::hygiene;
use federator_e2e::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

async fn scan(fed: &Federation) -> hygiene::Report {
    let mut clients = Vec::new();
    for c in fed.testbed.clusters() {
        clients.push((c.name().to_owned(), c.client().await.unwrap()));
    }
    hygiene::scan(&fed.dir, &clients).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_finds_private_keys_where_they_do_not_belong() {
    let mut fed = Federation::start(&[("c1", "cluster.local")], &[]).await;
    fed.join("c1");
    fed.start_serve(&[]);
    fed.start_agent("c1");
    fed.wait_healthy(&["c1"], Duration::from_secs(90)).await;

    let clean = scan(&fed).await;
    println!("{clean}");
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    // The hub's root, the agent's key and Istio's plug-in CA key.
    assert!(clean.keys_at_home >= 3, "{clean}");
    assert!(clean.objects > 100 && clean.log_files >= 4, "{clean}");

    let c1 = fed.members["c1"].cluster.client().await.unwrap();
    let stray = rcgen::KeyPair::generate().unwrap();
    let configmaps = Api::<ConfigMap>::namespaced(c1.clone(), "default");
    configmaps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("leak".into()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([("key.pem".into(), stray.serialize_pem())])),
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
    let kubeconfig = format!(
        "users:\n- name: x\n  user:\n    client-key-data: {}\n",
        STANDARD.encode(stray.serialize_pem())
    );
    let secrets = Api::<Secret>::namespaced(c1.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("kubeconfig".into()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "config".into(),
                    ByteString(kubeconfig.into_bytes()),
                )])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    // The agent's own key, as a debug print of its bytes in hex would show it.
    let agent_key = Api::<Secret>::namespaced(c1.clone(), names::NAMESPACE)
        .get(names::AGENT_KEY_SECRET)
        .await
        .unwrap();
    let pem_text = agent_key
        .data
        .unwrap()
        .into_values()
        .find(|v| String::from_utf8_lossy(&v.0).contains("PRIVATE KEY"))
        .unwrap()
        .0;
    let der = federator_core::cert::parse_pem_blocks(&pem_text, "the agent key").unwrap()[0]
        .contents()
        .to_vec();
    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    let log = fed.dir.join("leak.log");
    std::fs::write(&log, format!("line one\nDEBUG key bytes: {hex}\n")).unwrap();

    let dirty = scan(&fed).await;
    println!("{dirty}");
    let found = |what: &str| dirty.problems.iter().any(|p| p.contains(what));
    assert!(found("c1: ConfigMap default/leak"), "{:?}", dirty.problems);
    assert!(
        found("c1: Secret default/kubeconfig"),
        "{:?}",
        dirty.problems
    );
    assert!(found("leak.log:2"), "{:?}", dirty.problems);
    assert_eq!(dirty.problems.len(), 3, "{:?}", dirty.problems);

    configmaps
        .delete("leak", &DeleteParams::default())
        .await
        .unwrap();
    secrets
        .delete("kubeconfig", &DeleteParams::default())
        .await
        .unwrap();
    std::fs::remove_file(&log).unwrap();
    let again = scan(&fed).await;
    assert!(again.problems.is_empty(), "{:?}", again.problems);
}
