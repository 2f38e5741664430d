//! Multi-primary discovery: the hub keeps an Istio remote secret for every ordered pair of
//! members, and real istiod proves it with its own discovery.
//!
//! Three members in two trust domains (cluster-1 and cluster-2 in `cluster.local`, cluster-3
//! in `east.example`), the hub in its own cluster, one real istiod (`pilot-discovery`) per
//! member. Shown here: every istiod lists the other two as synced remote clusters in
//! `/debug/clusterz`; a Service with an EndpointSlice in cluster-2 shows in cluster-1's and
//! cluster-3's `/debug/registryz`; the privileges of the reader, the hub and the agent, asked
//! with SelfSubjectAccessReview of the real API server; a deleted or hand-edited remote secret
//! is repaired; a remote secret federator did not write is left alone and reported; after
//! `leave cluster-2`, cluster-2 disappears from the others' `/debug/clusterz` and registries,
//! its reader token is revoked, and cluster-1 and cluster-3 keep discovering each other; a
//! fourth cluster that joins is discovered by the running istiods, and its istiod discovers them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use federator_api::{names, plumbing, remote};
use federator_e2e::*;
use k8s_openapi::api::authorization::v1::ResourceAttributes;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use testbed::Istiod;

const MEMBERS: [(&str, &str); 3] = [
    ("cluster-1", "cluster.local"),
    ("cluster-2", "cluster.local"),
    ("cluster-3", "east.example"),
];

fn figure(what: &str, value: impl std::fmt::Display) {
    eprintln!("[figure] {what}: {value}");
}

async fn allowed(
    client: &Client,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let (resource, group) = resource
        .split_once('.')
        .map_or((resource, ""), |(r, g)| (r, g));
    let attributes = ResourceAttributes {
        verb: Some(verb.into()),
        resource: Some(resource.into()),
        group: Some(group.into()),
        namespace: namespace.map(Into::into),
        name: name.map(Into::into),
        ..ResourceAttributes::default()
    };
    plumbing::access_allowed(client, attributes).await.unwrap()
}

/// `/debug/clusterz` of an istiod: remote cluster id → sync status (its own cluster left out).
async fn clusterz(istiod: &Istiod) -> BTreeMap<String, String> {
    let http = format!("127.0.0.1:{}", istiod.ports().unwrap().http);
    let Ok(r) = testbed::http::get(&http, "/debug/clusterz", None).await else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let id = c["id"].as_str()?;
            (id != istiod.cluster_name()).then(|| {
                (
                    id.to_owned(),
                    c["syncStatus"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect()
}

async fn wait_clusterz(istiod: &Istiod, want: &[&str], timeout: Duration) {
    wait_for(
        &format!(
            "istiod of {} to list {want:?} as synced remote clusters",
            istiod.cluster_name()
        ),
        timeout,
        || async {
            let got = clusterz(istiod).await;
            let synced: Vec<&str> = got
                .iter()
                .filter(|(_, s)| s.as_str() == "synced")
                .map(|(c, _)| c.as_str())
                .collect();
            (got.len() == want.len() && synced == want).then_some(())
        },
    )
    .await;
}

/// The clusters istiod's registry has `host` from (`/debug/registryz`, its `clusterVIPs`).
async fn registry_clusters(istiod: &Istiod, host: &str) -> Vec<String> {
    let http = format!("127.0.0.1:{}", istiod.ports().unwrap().http);
    let Ok(r) = testbed::http::get(&http, "/debug/registryz", None).await else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    let mut out: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["hostname"] == host)
        .flat_map(|s| {
            s["clusterVIPs"]["Addresses"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    out.sort();
    out
}

async fn remote_secrets(client: &Client) -> BTreeMap<String, Secret> {
    let api: Api<Secret> = Api::namespaced(client.clone(), names::ISTIO_NAMESPACE);
    api.list(&kube::api::ListParams::default().labels("istio/multiCluster=true"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s))
        .collect()
}

/// Waits until `member` holds federator's remote secrets for exactly `peers`.
async fn wait_remote_secrets(fed: &Federation, member: &str, peers: &[&str]) {
    let client = fed.members[member].cluster.client().await.unwrap();
    let want: Vec<String> = peers.iter().map(|p| remote::secret_name(p)).collect();
    wait_for(
        &format!("{member} to hold remote secrets for {peers:?}"),
        Duration::from_secs(60),
        || async {
            let got: Vec<String> = remote_secrets(&client)
                .await
                .into_iter()
                .filter(|(_, s)| remote::is_ours(s))
                .map(|(n, _)| n)
                .collect();
            if got != want
                && let Some(ct) = fed.cluster_trust(member).await
            {
                eprintln!(
                    "{member}: remote secrets {got:?}; spec.peersDigest {:?}, agent reports {:?}",
                    ct.spec.peers_digest,
                    ct.status.and_then(|s| s.remote_secrets)
                );
            }
            (got == want).then_some(())
        },
    )
    .await;
}

async fn publish_service(client: &Client, ns: &str, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .create(
            &PostParams::default(),
            &Service {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(ServiceSpec {
                    ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        ..Default::default()
                    }]),
                    selector: Some([("app".to_owned(), name.to_owned())].into()),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            },
        )
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    slices
        .create(
            &PostParams::default(),
            &EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-1")),
                    labels: Some(
                        [("kubernetes.io/service-name".to_owned(), name.to_owned())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints: Some(vec![Endpoint {
                    addresses: vec!["10.2.0.7".into()],
                    ..Endpoint::default()
                }]),
                ports: Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    ..Default::default()
                }]),
            },
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_secrets_make_every_istiod_discover_every_other_member() {
    // cluster-4 joins at the end.
    let mut all = MEMBERS.to_vec();
    all.push(("cluster-4", "east.example"));
    let mut fed = Federation::start(&all, &[]).await;
    // A remote secret someone else wrote, for a cluster that is no member.
    let c1 = fed.members["cluster-1"].cluster.client().await.unwrap();
    let mut foreign = remote::remote_secret("legacy", b"apiVersion: v1\nkind: Config\n");
    foreign.metadata.labels = Some([("istio/multiCluster".to_owned(), "true".to_owned())].into());
    let start = Instant::now();
    for (name, _) in MEMBERS {
        fed.join(name);
        fed.install_mesh_config(name).await;
    }
    fed.start_serve(&[]);
    for (name, _) in MEMBERS {
        fed.start_agent(name);
    }
    fed.wait_healthy(
        &["cluster-1", "cluster-2", "cluster-3"],
        Duration::from_secs(90),
    )
    .await;
    Api::<Secret>::namespaced(c1.clone(), names::ISTIO_NAMESPACE)
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    for (member, _) in MEMBERS {
        let peers: Vec<&str> = MEMBERS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != member)
            .collect();
        wait_remote_secrets(&fed, member, &peers).await;
    }
    figure(
        "join of 3 members to all 6 remote secrets",
        format!("{:.1?}", start.elapsed()),
    );

    // The remote secret is what istioctl create-remote-secret writes.
    let secrets = remote_secrets(&c1).await;
    let s = &secrets["istio-remote-secret-cluster-2"];
    assert_eq!(
        s.metadata.annotations.as_ref().unwrap()["networking.istio.io/cluster"],
        "cluster-2"
    );
    let data = plumbing::secret_data(s);
    assert_eq!(data.keys().collect::<Vec<_>>(), ["cluster-2"]);
    let reader_yaml = String::from_utf8(data["cluster-2"].clone()).unwrap();
    let reader =
        kube::Client::try_from(plumbing::config_from_yaml(&reader_yaml).await.unwrap()).unwrap();

    // Privileges, asked of cluster-2's real API server with the reader's own token.
    for (verb, resource, ns, name) in [
        ("list", "services", None, None),
        ("watch", "endpointslices.discovery.k8s.io", None, None),
        ("list", "pods", None, None),
        ("list", "namespaces", None, None),
        ("list", "nodes", None, None),
        ("get", "configmaps", Some("istio-system"), Some("istio")),
        // istiod 1.31 watches remote Secrets (docs/security.md says why this stays).
        ("list", "secrets", None, None),
    ] {
        assert!(
            allowed(&reader, verb, resource, ns, name).await,
            "reader: {verb} {resource}"
        );
    }
    for (verb, resource, ns, name) in [
        ("create", "secrets", Some("istio-system"), None),
        ("update", "secrets", Some("istio-system"), Some("cacerts")),
        (
            "delete",
            "secrets",
            Some("federator-system"),
            Some(names::PEERS_SECRET),
        ),
        ("list", "configmaps", Some("istio-system"), None),
        ("get", "configmaps", Some("default"), Some("x")),
        ("create", "services", Some("default"), None),
        (
            "create",
            "serviceexports.multicluster.x-k8s.io",
            Some("default"),
            None,
        ),
        ("create", "tokenreviews.authentication.k8s.io", None, None),
        ("list", "replicasets.apps", None, None),
        ("list", "endpoints", None, None),
    ] {
        assert!(
            !allowed(&reader, verb, resource, ns, name).await,
            "reader must not: {verb} {resource} {ns:?} {name:?}"
        );
    }
    // The hub's credential in a member: it may patch the peers Secret by name, and read no
    // Secret at all.
    let stored = {
        let api: Api<Secret> = Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
        let s = api
            .get(&names::member_credential_secret("cluster-1"))
            .await
            .unwrap();
        String::from_utf8(plumbing::secret_data(&s)[names::KUBECONFIG_KEY].clone()).unwrap()
    };
    let hub = kube::Client::try_from(plumbing::config_from_yaml(&stored).await.unwrap()).unwrap();
    let fs = Some(names::NAMESPACE);
    assert!(allowed(&hub, "patch", "secrets", fs, Some(names::PEERS_SECRET)).await);
    for (verb, ns, name) in [
        ("get", fs, Some(names::PEERS_SECRET)),
        ("list", fs, None),
        ("create", fs, None),
        ("patch", fs, Some(names::AGENT_KEY_SECRET)),
        (
            "get",
            Some("istio-system"),
            Some("istio-remote-secret-cluster-2"),
        ),
        ("list", Some("istio-system"), None),
        ("create", Some("istio-system"), None),
    ] {
        assert!(
            !allowed(&hub, verb, "secrets", ns, name).await,
            "hub must not: {verb} secrets {ns:?} {name:?}"
        );
    }
    // It mints tokens for the reader, and cannot make itself another identity.
    assert!(!allowed(&hub, "create", "serviceaccounts", fs, None).await);
    let token = ResourceAttributes {
        verb: Some("create".into()),
        resource: Some("serviceaccounts".into()),
        subresource: Some("token".into()),
        group: Some(String::new()),
        namespace: Some(names::NAMESPACE.into()),
        name: Some(names::READER_SERVICE_ACCOUNT.into()),
        ..ResourceAttributes::default()
    };
    assert!(plumbing::access_allowed(&hub, token.clone()).await.unwrap());
    let agent_token = ResourceAttributes {
        name: Some(names::AGENT_SERVICE_ACCOUNT.into()),
        ..token
    };
    assert!(!plumbing::access_allowed(&hub, agent_token).await.unwrap());

    // Real istiod in each member: each discovers the other two.
    let mut istiods = BTreeMap::new();
    let start = Instant::now();
    for (name, td) in MEMBERS {
        istiods.insert(name, fed.start_istiod(name, td).await);
    }
    for (name, _) in MEMBERS {
        let peers: Vec<&str> = MEMBERS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != name)
            .collect();
        // cluster-1's istiod also tries the foreign "legacy" secret: it is listed, not synced.
        if name == "cluster-1" {
            wait_for(
                "cluster-1's istiod to sync both peers",
                Duration::from_secs(90),
                || async {
                    let z = clusterz(&istiods[name]).await;
                    eprintln!("cluster-1 clusterz: {z:?}");
                    (z.get("cluster-2").map(String::as_str) == Some("synced")
                        && z.get("cluster-3").map(String::as_str) == Some("synced"))
                    .then_some(())
                },
            )
            .await;
        } else {
            wait_clusterz(&istiods[name], &peers, Duration::from_secs(90)).await;
        }
    }
    figure(
        "start of 3 istiods (each until ready) to every istiod listing both peers synced",
        format!("{:.1?}", start.elapsed()),
    );

    // A Service with an EndpointSlice in cluster-2 shows in the others' registries.
    let c2 = fed.members["cluster-2"].cluster.client().await.unwrap();
    publish_service(&c2, "shop", "cart").await;
    let host = "cart.shop.svc.cluster.local";
    for name in ["cluster-1", "cluster-3"] {
        wait_for(
            &format!("{host} from cluster-2 in {name}'s istiod registry"),
            Duration::from_secs(60),
            || async {
                registry_clusters(&istiods[name], host)
                    .await
                    .contains(&"cluster-2".to_owned())
                    .then_some(())
            },
        )
        .await;
    }

    // The foreign remote secret is left alone and reported.
    let ct = fed.cluster_trust("cluster-1").await.unwrap();
    let rs = ct.status.unwrap().remote_secrets.unwrap();
    assert_eq!(rs.peers, ["cluster-2", "cluster-3"]);
    assert!(
        rs.foreign
            .iter()
            .any(|f| f.contains("istio-remote-secret-legacy")),
        "{rs:?}"
    );
    let still = remote_secrets(&c1).await;
    assert_eq!(
        plumbing::secret_data(&still["istio-remote-secret-legacy"]),
        plumbing::secret_data(&foreign)
    );

    // A deleted remote secret is repaired, and so is a hand-edited one.
    let istio1: Api<Secret> = Api::namespaced(c1.clone(), names::ISTIO_NAMESPACE);
    istio1
        .delete("istio-remote-secret-cluster-3", &DeleteParams::default())
        .await
        .unwrap();
    wait_remote_secrets(&fed, "cluster-1", &["cluster-2", "cluster-3"]).await;
    istio1
        .patch(
            "istio-remote-secret-cluster-2",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"cluster-2": "dGFtcGVyZWQ="}})),
        )
        .await
        .unwrap();
    wait_for(
        "the hand-edited remote secret to be repaired",
        Duration::from_secs(30),
        || async {
            let s = istio1.get("istio-remote-secret-cluster-2").await.ok()?;
            (plumbing::secret_data(&s)["cluster-2"] == reader_yaml.as_bytes()).then_some(())
        },
    )
    .await;
    wait_clusterz(
        &istiods["cluster-3"],
        &["cluster-1", "cluster-2"],
        Duration::from_secs(60),
    )
    .await;

    // cluster-2 leaves: it disappears from the others, its reader token is revoked, and 1↔3
    // keep discovering each other.
    let start = Instant::now();
    fed.federator_ok(&[
        "leave",
        "cluster",
        "cluster-2",
        "--kubeconfig",
        fed.members["cluster-2"]
            .cluster
            .kubeconfig_path()
            .to_str()
            .unwrap(),
    ]);
    wait_remote_secrets(&fed, "cluster-1", &["cluster-3"]).await;
    wait_remote_secrets(&fed, "cluster-3", &["cluster-1"]).await;
    wait_clusterz(
        &istiods["cluster-3"],
        &["cluster-1"],
        Duration::from_secs(60),
    )
    .await;
    wait_for(
        "cluster-1's istiod to drop cluster-2",
        Duration::from_secs(60),
        || async {
            let z = clusterz(&istiods["cluster-1"]).await;
            (!z.contains_key("cluster-2")
                && z.get("cluster-3").map(String::as_str) == Some("synced"))
            .then_some(())
        },
    )
    .await;
    figure(
        "leave to cluster-2 gone from every istiod",
        format!("{:.1?}", start.elapsed()),
    );
    for name in ["cluster-1", "cluster-3"] {
        wait_for(
            &format!("{host} gone from {name}'s registry"),
            Duration::from_secs(60),
            || async {
                registry_clusters(&istiods[name], host)
                    .await
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
    }
    // Its rights went with its ClusterRoleBinding at once (403); its token is rejected (401) as
    // soon as the API server's ServiceAccount cache saw the deletion.
    let services = Api::<Service>::all(reader.clone());
    let listed = services.list(&kube::api::ListParams::default()).await;
    assert!(
        listed
            .as_ref()
            .is_err_and(|e| plumbing::is_status(e, 401) || plumbing::is_status(e, 403)),
        "the departed reader can still list Services: {listed:?}"
    );
    wait_for(
        "the departed reader's token to be rejected (401)",
        Duration::from_secs(30),
        || async {
            services
                .list(&kube::api::ListParams::default())
                .await
                .is_err_and(|e| plumbing::is_status(&e, 401))
                .then_some(())
        },
    )
    .await;
    // Nothing of federator's is left in cluster-2's istio-system.
    assert!(
        remote_secrets(&c2)
            .await
            .values()
            .all(|s| !remote::is_ours(s)),
        "cluster-2 keeps federator remote secrets"
    );

    // A fourth cluster joins: the running istiods discover it, and its own istiod the others.
    let start = Instant::now();
    fed.join("cluster-4");
    fed.install_mesh_config("cluster-4").await;
    fed.start_agent("cluster-4");
    wait_clusterz(
        &istiods["cluster-3"],
        &["cluster-1", "cluster-4"],
        Duration::from_secs(90),
    )
    .await;
    wait_for(
        "cluster-1's istiod to sync cluster-4",
        Duration::from_secs(90),
        || async {
            let z = clusterz(&istiods["cluster-1"]).await;
            (z.get("cluster-4").map(String::as_str) == Some("synced")).then_some(())
        },
    )
    .await;
    figure(
        "join of a fourth cluster to the running istiods discovering it",
        format!("{:.1?}", start.elapsed()),
    );
    let istiod4 = fed.start_istiod("cluster-4", "east.example").await;
    wait_clusterz(
        &istiod4,
        &["cluster-1", "cluster-3"],
        Duration::from_secs(90),
    )
    .await;
    istiod4.stop().await;

    for (_, istiod) in istiods {
        istiod.stop().await;
    }
}
