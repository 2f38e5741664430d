//! At steady state nothing is written anywhere: no resourceVersion changes over 30 seconds, in
//! the hub or in any member.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use federator_api::hub::{Federation as FederationCr, MemberCluster};
use federator_api::member::ClusterTrust;
use federator_api::names;
use federator_e2e::*;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

async fn versions(client: &Client, out: &mut BTreeMap<String, String>, cluster: &str) {
    for ns in [names::NAMESPACE, names::ISTIO_NAMESPACE] {
        let lp = ListParams::default();
        for s in Api::<Secret>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .unwrap()
        {
            out.insert(
                format!("{cluster}/{ns}/secret/{}", s.name_any()),
                s.resource_version().unwrap(),
            );
        }
        for c in Api::<ConfigMap>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .unwrap()
        {
            out.insert(
                format!("{cluster}/{ns}/configmap/{}", c.name_any()),
                c.resource_version().unwrap(),
            );
        }
    }
    if let Ok(list) = Api::<ClusterTrust>::namespaced(client.clone(), names::NAMESPACE)
        .list(&ListParams::default())
        .await
    {
        for c in list {
            out.insert(
                format!("{cluster}/clustertrust/{}", c.name_any()),
                c.resource_version().unwrap(),
            );
        }
    }
    if let Ok(list) = Api::<MemberCluster>::namespaced(client.clone(), names::NAMESPACE)
        .list(&ListParams::default())
        .await
    {
        for m in list {
            out.insert(
                format!("{cluster}/membercluster/{}", m.name_any()),
                m.resource_version().unwrap(),
            );
        }
    }
    if let Ok(list) = Api::<FederationCr>::namespaced(client.clone(), names::NAMESPACE)
        .list(&ListParams::default())
        .await
    {
        for f in list {
            out.insert(
                format!("{cluster}/federation/{}", f.name_any()),
                f.resource_version().unwrap(),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_writes_at_steady_state() {
    let members = [("c1", "cluster.local"), ("c2", "c2.example")];
    let mut fed = Federation::start(&members, &[]).await;
    for (name, _) in members {
        fed.join(name);
        fed.install_mesh_config(name).await;
    }
    fed.start_serve(&[]);
    for (name, _) in members {
        fed.start_agent(name);
    }
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(90))
        .await;
    // Let the last status writes land.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let snapshot = || async {
        let mut v = BTreeMap::new();
        versions(&fed.hub.client().await.unwrap(), &mut v, "hub").await;
        for (name, _) in members {
            versions(
                &fed.members[name].cluster.client().await.unwrap(),
                &mut v,
                name,
            )
            .await;
        }
        v
    };
    let before = snapshot().await;
    assert!(
        before.keys().any(|k| k.ends_with("/secret/cacerts")),
        "{before:?}"
    );
    assert!(before.keys().any(|k| k.ends_with("/configmap/istio")));
    // Joining again and re-running init change nothing either.
    for (name, _) in members {
        assert!(fed.join(name).contains("is a member"));
    }
    assert!(fed.federator_ok(&["init"]).contains("nothing changed"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = snapshot().await;
    let changed: Vec<&String> = before
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "written at steady state: {changed:?}");
    assert_eq!(before.len(), after.len(), "objects appeared or vanished");
}
