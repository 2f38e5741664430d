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

/// resourceVersions by `<cluster>/<namespace>/<kind>/<name>`.
struct Versions<'a> {
    client: &'a Client,
    cluster: &'a str,
    out: &'a mut BTreeMap<String, String>,
}

impl Versions<'_> {
    /// Adds every `K` in `ns`; nothing when the list fails and `optional` (a CRD the cluster
    /// does not have).
    async fn add<K>(&mut self, ns: &str, kind: &str, optional: bool)
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let api = Api::<K>::namespaced(self.client.clone(), ns);
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(_) if optional => return,
            Err(e) => panic!("list {kind} in {}/{ns}: {e}", self.cluster),
        };
        for o in list {
            let key = format!("{}/{ns}/{kind}/{}", self.cluster, o.name_any());
            self.out.insert(key, o.resource_version().unwrap());
        }
    }
}

async fn versions(client: &Client, out: &mut BTreeMap<String, String>, cluster: &str) {
    let mut v = Versions {
        client,
        cluster,
        out,
    };
    for ns in [names::NAMESPACE, names::ISTIO_NAMESPACE] {
        v.add::<Secret>(ns, "secret", false).await;
        v.add::<ConfigMap>(ns, "configmap", false).await;
    }
    let ns = names::NAMESPACE;
    v.add::<ClusterTrust>(ns, "clustertrust", true).await;
    v.add::<MemberCluster>(ns, "membercluster", true).await;
    v.add::<FederationCr>(ns, "federation", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_writes_at_steady_state() {
    let members = [("c1", "cluster.local"), ("c2", "c2.example")];
    let mut fed = Federation::start(&members, &[]).await;
    fed.join_all_and_serve(true).await;
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
