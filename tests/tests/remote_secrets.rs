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
//!
//! The other tests: istiod keeps discovering its peer, polled continuously, across three
//! reader token renewals, and switches to every new token (the API server's audit log); the
//! secret real `istioctl create-remote-secret` makes and federator's give istiod the same
//! discovery result, and federator's reader has a subset of the rights of istioctl's; a member
//! whose API server is down holds up no one's remote secrets (docs/security.md says what each
//! shows and what not).

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

/// The bearer token of the kubeconfig for `cluster` in a remote secret.
fn remote_secret_token(secret: &Secret, cluster: &str) -> Option<String> {
    let data = plumbing::secret_data(secret);
    let kubeconfig: serde_yaml::Value = serde_yaml::from_slice(data.get(cluster)?).ok()?;
    kubeconfig["users"][0]["user"]["token"]
        .as_str()
        .map(str::to_owned)
}

/// The claims of a ServiceAccount token (a JWT; read, not verified: only to recognise it).
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("a base64url JWT payload");
    serde_json::from_slice(&json).expect("JSON claims")
}

/// The start times of the requests `cluster`'s API server audited for the ServiceAccount
/// token with `jti` (its audit log names the credential: `JTI=<jti>`).
fn audited_uses(cluster: &testbed::Cluster, jti: &str) -> Vec<time::OffsetDateTime> {
    let log = std::fs::read_to_string(cluster.audit_log_path()).unwrap_or_default();
    let want = format!("JTI={jti}");
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["user"]["extra"]["authentication.kubernetes.io/credential-id"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| id == want.as_str()))
        })
        .filter_map(|e| {
            time::OffsetDateTime::parse(
                e["requestReceivedTimestamp"].as_str()?,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
        })
        .collect()
}

/// One direction of discovery watched through the reader token renewals: `observer`'s istiod
/// reading `peer`, whose Service `host` it must keep listing.
struct Watched {
    observer: &'static str,
    peer: &'static str,
    host: &'static str,
    /// The reader tokens of `peer` seen in `observer`'s remote secret, in order.
    tokens: Vec<String>,
    /// Since when `observer`'s istiod lists a new client for `peer` as still syncing.
    syncing_since: Option<Instant>,
    /// How long each such swap showed as syncing.
    swaps: Vec<Duration>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_keeps_discovering_across_reader_token_renewals() {
    const PAIR: [(&str, &str); 2] = [
        ("cluster-1", "cluster.local"),
        ("cluster-2", "east.example"),
    ];
    const RENEWALS: usize = 3;
    let mut fed = Federation::start(&PAIR, &[]).await;
    for (name, _) in PAIR {
        fed.join(name);
        fed.install_mesh_config(name).await;
    }
    // Tokens live 10 minutes (the API server's minimum) and are renewed every 5 seconds.
    fed.start_serve(&[
        "--reader-token-ttl",
        "10m",
        "--reader-token-renew-after",
        "5s",
    ]);
    for (name, _) in PAIR {
        fed.start_agent(name);
    }
    wait_remote_secrets(&fed, "cluster-1", &["cluster-2"]).await;
    wait_remote_secrets(&fed, "cluster-2", &["cluster-1"]).await;
    let mut istiods = BTreeMap::new();
    for (name, td) in PAIR {
        istiods.insert(name, fed.start_istiod(name, td).await);
    }
    let mut watched = [
        Watched {
            observer: "cluster-1",
            peer: "cluster-2",
            host: "cart.shop.svc.cluster.local",
            tokens: Vec::new(),
            syncing_since: None,
            swaps: Vec::new(),
        },
        Watched {
            observer: "cluster-2",
            peer: "cluster-1",
            host: "till.shop.svc.cluster.local",
            tokens: Vec::new(),
            syncing_since: None,
            swaps: Vec::new(),
        },
    ];
    let mut clients = BTreeMap::new();
    for (name, _) in PAIR {
        clients.insert(name, fed.members[name].cluster.client().await.unwrap());
    }
    publish_service(&clients["cluster-2"], "shop", "cart").await;
    publish_service(&clients["cluster-1"], "shop", "till").await;
    for w in &watched {
        wait_clusterz(&istiods[w.observer], &[w.peer], Duration::from_secs(90)).await;
        wait_for(
            &format!("{} from {} in {}'s registry", w.host, w.peer, w.observer),
            Duration::from_secs(60),
            || async {
                let istiod = &istiods[w.observer];
                (registry_clusters(istiod, w.host)
                    .await
                    .contains(&w.peer.to_owned())
                    && endpoint_shards(istiod, w.host)
                        .await
                        .to_string()
                        .contains("10.2.0.7"))
                .then_some(())
            },
        )
        .await;
    }

    // Every 100 ms, until each peer's token was renewed RENEWALS times and istiod used the
    // last one: the peer's Service must be in istiod's /debug/registryz and its endpoint in
    // /debug/endpointShardz at every single poll, and the peer in /debug/clusterz as synced —
    // or, for a moment after a renewal, as `syncing`: istiod 1.31 lists the client it builds
    // for the new kubeconfig there while the previous, synced one keeps serving until the new
    // one has synced (make-before-break, `ClusterStore.Swap`); each such swap must end within
    // 3 seconds. Absent, `timeout` or `closed`, or a missing Service or endpoint, is a gap.
    const SWAP_LIMIT: Duration = Duration::from_secs(3);
    let start = Instant::now();
    let mut gaps = Vec::new();
    let mut polls = 0usize;
    loop {
        polls += 1;
        for w in &mut watched {
            let istiod = &istiods[w.observer];
            let at = format!("{:.1?}", start.elapsed());
            match clusterz(istiod).await.get(w.peer).map(String::as_str) {
                Some("synced") => {
                    if let Some(since) = w.syncing_since.take() {
                        w.swaps.push(since.elapsed());
                    }
                }
                Some("syncing") => {
                    let since = *w.syncing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > SWAP_LIMIT {
                        gaps.push(format!(
                            "{at}: {}'s istiod lists {} as syncing for {:.1?}",
                            w.observer,
                            w.peer,
                            since.elapsed()
                        ));
                    }
                }
                other => gaps.push(format!(
                    "{at}: {}'s istiod lists {} as {other:?}",
                    w.observer, w.peer
                )),
            }
            if !registry_clusters(istiod, w.host)
                .await
                .contains(&w.peer.to_owned())
            {
                gaps.push(format!(
                    "{at}: {} from {} missing in {}'s registry",
                    w.host, w.peer, w.observer
                ));
            }
            if !endpoint_shards(istiod, w.host)
                .await
                .to_string()
                .contains("10.2.0.7")
            {
                gaps.push(format!(
                    "{at}: the endpoint of {} from {} missing in {}'s istiod",
                    w.host, w.peer, w.observer
                ));
            }
            let secrets = remote_secrets(&clients[w.observer]).await;
            if let Some(token) = secrets
                .get(&remote::secret_name(w.peer))
                .and_then(|s| remote_secret_token(s, w.peer))
                && w.tokens.last() != Some(&token)
            {
                eprintln!(
                    "{at}: {}'s remote secret for {} holds reader token #{}",
                    w.observer,
                    w.peer,
                    w.tokens.len()
                );
                w.tokens.push(token);
            }
        }
        let done = watched.iter().all(|w| {
            w.tokens.len() > RENEWALS
                && !audited_uses(
                    &fed.members[w.peer].cluster,
                    claims(w.tokens.last().unwrap())["jti"].as_str().unwrap(),
                )
                .is_empty()
        });
        if done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {RENEWALS} renewals used by istiod in 120 s: {:?}",
            watched.iter().map(|w| w.tokens.len()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    figure(
        "reader token renewals watched",
        format!(
            "{:?} tokens per direction in {:.1?}, {polls} polls of both istiods",
            watched.iter().map(|w| w.tokens.len()).collect::<Vec<_>>(),
            start.elapsed()
        ),
    );
    assert!(gaps.is_empty(), "discovery had gaps:\n{}", gaps.join("\n"));
    for w in &watched {
        figure(
            &format!(
                "{}'s istiod: renewals of {}'s token seen as a syncing swap, and how long each",
                w.observer, w.peer
            ),
            format!("{} swaps: {:?}", w.swaps.len(), w.swaps),
        );
        assert!(
            w.swaps.len() <= w.tokens.len(),
            "more swaps than new tokens: {:?}",
            w.swaps
        );
    }

    // The tokens: 10-minute lifetimes, each a new one; and the API server's view (its audit
    // log names the token of every request) shows istiod switching to each new token and
    // leaving the previous one within seconds.
    for w in &watched {
        let peer = &fed.members[w.peer].cluster;
        let mut previous: Option<String> = None;
        for (i, token) in w.tokens.iter().enumerate() {
            let c = claims(token);
            assert_eq!(
                c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
                600,
                "token #{i} of {}: {c}",
                w.peer
            );
            assert_eq!(
                c["sub"],
                format!(
                    "system:serviceaccount:{}:{}",
                    names::NAMESPACE,
                    names::READER_SERVICE_ACCOUNT
                )
            );
            let jti = c["jti"].as_str().unwrap().to_owned();
            let uses = audited_uses(peer, &jti);
            let first = *uses.iter().min().unwrap_or_else(|| {
                panic!(
                    "{}'s istiod never used token #{i} of {}",
                    w.observer, w.peer
                )
            });
            if let Some(old) = previous {
                let last_old = audited_uses(peer, &old).into_iter().max().unwrap();
                assert!(
                    last_old <= first + time::Duration::seconds(5),
                    "{}'s istiod still started requests with token #{} of {} at {last_old}, \
                     after it used token #{i} from {first}",
                    w.observer,
                    i - 1,
                    w.peer
                );
            }
            previous = Some(jti);
        }
    }
    for (_, istiod) in istiods {
        istiod.stop().await;
    }
}

/// `/debug/registryz` entries of an istiod for `host`.
async fn registry_entries(istiod: &Istiod, host: &str) -> Vec<serde_json::Value> {
    let http = format!("127.0.0.1:{}", istiod.ports().unwrap().http);
    let Ok(r) = testbed::http::get(&http, "/debug/registryz", None).await else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["hostname"] == host)
        .cloned()
        .collect()
}

/// `/debug/endpointShardz` of an istiod for `host` (its endpoints, by registry and cluster).
async fn endpoint_shards(istiod: &Istiod, host: &str) -> serde_json::Value {
    let http = format!("127.0.0.1:{}", istiod.ports().unwrap().http);
    let Ok(r) = testbed::http::get(&http, "/debug/endpointShardz", None).await else {
        return serde_json::Value::Null;
    };
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    v[host].clone()
}

/// One right: (API group, resource, verb, namespace or cluster-wide, name or any).
type Right = (String, String, String, Option<String>, Option<String>);

/// Every right the RBAC objects of `client`'s cluster give ServiceAccount `ns/sa`, rule by
/// rule as the objects hold them (ClusterRoleBindings cluster-wide, RoleBindings in their
/// namespace), wildcards kept as `*`.
async fn rights_of(client: &Client, ns: &str, sa: &str) -> Vec<Right> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
    let is_sa = |subjects: &Option<Vec<Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(ns)
        })
    };
    let lp = kube::api::ListParams::default();
    let cluster_roles = Api::<ClusterRole>::all(client.clone());
    let mut bound: Vec<(Option<String>, Vec<k8s_openapi::api::rbac::v1::PolicyRule>)> = Vec::new();
    for b in Api::<ClusterRoleBinding>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
    {
        if is_sa(&b.subjects) {
            let role = cluster_roles.get(&b.role_ref.name).await.unwrap();
            bound.push((None, role.rules.unwrap_or_default()));
        }
    }
    for b in Api::<RoleBinding>::all(client.clone())
        .list(&lp)
        .await
        .unwrap()
    {
        if is_sa(&b.subjects) {
            let at = b.metadata.namespace.clone();
            let rules = if b.role_ref.kind == "ClusterRole" {
                cluster_roles.get(&b.role_ref.name).await.unwrap().rules
            } else {
                Api::<Role>::namespaced(client.clone(), at.as_deref().unwrap())
                    .get(&b.role_ref.name)
                    .await
                    .unwrap()
                    .rules
            };
            bound.push((at, rules.unwrap_or_default()));
        }
    }
    let mut out = Vec::new();
    for (scope, rules) in bound {
        for r in rules {
            let names: Vec<Option<String>> = match r.resource_names.as_deref() {
                None | Some([]) => vec![None],
                Some(n) => n.iter().cloned().map(Some).collect(),
            };
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        for n in &names {
                            out.push((g.clone(), res.clone(), v.clone(), scope.clone(), n.clone()));
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `wide` grants at least `right` (wildcards, cluster-wide scope and no names cover
/// any).
fn covers(wide: &Right, right: &Right) -> bool {
    let field = |w: &str, r: &str| w == "*" || w == r;
    field(&wide.0, &right.0)
        && field(&wide.1, &right.1)
        && field(&wide.2, &right.2)
        && (wide.3.is_none() || wide.3 == right.3)
        && (wide.4.is_none() || wide.4 == right.4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_discovers_the_same_through_federator_as_through_istioctl_create_remote_secret() {
    const PAIR: [(&str, &str); 2] = [
        ("cluster-1", "cluster.local"),
        ("cluster-2", "cluster.local"),
    ];
    // `reference`, outside the federation, gets istioctl's remote secret for cluster-2;
    // cluster-1 gets federator's.
    let mut fed = Federation::start_with_outsiders("hub", &PAIR, &["reference"], &[]).await;
    for (name, _) in PAIR {
        fed.join(name);
        fed.install_mesh_config(name).await;
    }
    fed.start_serve(&[]);
    for (name, _) in PAIR {
        fed.start_agent(name);
    }
    wait_remote_secrets(&fed, "cluster-1", &["cluster-2"]).await;

    // istioctl create-remote-secret against cluster-2, as Istio's multi-primary guide runs it.
    // It makes a ServiceAccount token Secret, which the token controller fills (a node-less
    // testbed cluster runs none unless asked).
    let c2 = fed.members["cluster-2"].cluster.clone();
    fed.testbed.start_token_controller("cluster-2").unwrap();
    let istioctl = fed.testbed.binaries().istioctl().unwrap();
    let start = Instant::now();
    let out = std::process::Command::new(&istioctl)
        .args([
            "create-remote-secret",
            "--name",
            "cluster-2",
            "--kubeconfig",
        ])
        .arg(c2.kubeconfig_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "istioctl create-remote-secret: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    figure(
        "istioctl create-remote-secret against cluster-2",
        format!("{:.1?}", start.elapsed()),
    );
    // Its output: a header comment, then the Secret between `---` separators.
    let reference_secret: Secret = serde_yaml::Deserializer::from_slice(&out.stdout)
        .filter_map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).ok())
        .find(|v| v["kind"] == "Secret")
        .map(|v| serde_yaml::from_value(v).unwrap())
        .expect("a Secret in istioctl's output");
    assert_eq!(
        reference_secret.metadata.name.as_deref(),
        Some("istio-remote-secret-cluster-2")
    );

    // Both secrets side by side: the same name, labels, annotation and data key.
    let c1 = fed.members["cluster-1"].cluster.client().await.unwrap();
    let ours = remote_secrets(&c1).await["istio-remote-secret-cluster-2"].clone();
    let label = |s: &Secret| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("istio/multiCluster").cloned())
    };
    let annotation = |s: &Secret| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("networking.istio.io/cluster").cloned())
    };
    assert_eq!(label(&ours), label(&reference_secret));
    assert_eq!(annotation(&ours), annotation(&reference_secret));
    let reference_data: Vec<String> = reference_secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        plumbing::secret_data(&ours)
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        reference_data
    );

    // Each into its istiod.
    let reference = fed.testbed.cluster("reference").unwrap().clone();
    let istiod_ref = fed.start_istiod("reference", "cluster.local").await;
    let istiod_1 = fed.start_istiod("cluster-1", "cluster.local").await;
    let rc = reference.client().await.unwrap();
    Api::<Secret>::namespaced(rc.clone(), names::ISTIO_NAMESPACE)
        .create(&PostParams::default(), &reference_secret)
        .await
        .unwrap();
    publish_service(&c2.client().await.unwrap(), "shop", "cart").await;
    let host = "cart.shop.svc.cluster.local";
    for istiod in [&istiod_1, &istiod_ref] {
        wait_clusterz(istiod, &["cluster-2"], Duration::from_secs(90)).await;
        wait_for(
            &format!(
                "{host} and its endpoint in {}'s istiod",
                istiod.cluster_name()
            ),
            Duration::from_secs(60),
            || async {
                let shards = endpoint_shards(istiod, host).await;
                (registry_clusters(istiod, host).await == ["cluster-2"]
                    && shards.to_string().contains("10.2.0.7"))
                .then_some(())
            },
        )
        .await;
    }
    // The same discovery result: the same registry entry and the same endpoints.
    let (entry_1, entry_ref) = (
        registry_entries(&istiod_1, host).await,
        registry_entries(&istiod_ref, host).await,
    );
    assert_eq!(entry_1.len(), 1, "{entry_1:?}");
    assert_eq!(
        entry_1, entry_ref,
        "registryz differs: federator's secret {entry_1:#?}\nistioctl's {entry_ref:#?}"
    );
    let (shards_1, shards_ref) = (
        endpoint_shards(&istiod_1, host).await,
        endpoint_shards(&istiod_ref, host).await,
    );
    assert_eq!(
        shards_1, shards_ref,
        "endpointShardz differs: federator's {shards_1:#}\nistioctl's {shards_ref:#}"
    );
    eprintln!("registryz entry (both): {}", entry_1[0]);
    eprintln!("endpointShardz (both): {shards_1}");

    // The rights: every rule federator's reader holds in cluster-2's RBAC objects is covered
    // by a rule of the identity istioctl set up there, and not the other way round.
    let admin2 = c2.client().await.unwrap();
    let ours_rights = rights_of(&admin2, names::NAMESPACE, names::READER_SERVICE_ACCOUNT).await;
    let istio_rights = rights_of(&admin2, "istio-system", "istio-reader-service-account").await;
    assert!(!ours_rights.is_empty() && !istio_rights.is_empty());
    let uncovered: Vec<&Right> = ours_rights
        .iter()
        .filter(|r| !istio_rights.iter().any(|w| covers(w, r)))
        .collect();
    assert!(
        uncovered.is_empty(),
        "federator's reader has rights istioctl's lacks: {uncovered:?}\nistio: {istio_rights:?}"
    );
    let only_istio: Vec<&Right> = istio_rights
        .iter()
        .filter(|w| !ours_rights.iter().any(|r| covers(r, w)))
        .collect();
    assert!(!only_istio.is_empty());
    figure(
        "reader rights (rule atoms) federator / istioctl",
        format!("{} / {}", ours_rights.len(), istio_rights.len()),
    );
    eprintln!("rights only istioctl's reader has: {only_istio:?}");

    // The same asked of the API server with each identity's own token from its secret.
    let client_of = |kubeconfig: Vec<u8>| async move {
        let yaml = String::from_utf8(kubeconfig).unwrap();
        kube::Client::try_from(plumbing::config_from_yaml(&yaml).await.unwrap()).unwrap()
    };
    let our_reader = client_of(plumbing::secret_data(&ours)["cluster-2"].clone()).await;
    let istio_reader = client_of(
        reference_secret.string_data.as_ref().unwrap()["cluster-2"]
            .clone()
            .into_bytes(),
    )
    .await;
    let mut asked = 0;
    let mut ours_allowed = 0;
    for resource in [
        "services",
        "endpointslices.discovery.k8s.io",
        "endpoints",
        "pods",
        "nodes",
        "namespaces",
        "secrets",
        "configmaps",
        "serviceaccounts",
        "replicationcontrollers",
        "replicasets.apps",
        "deployments.apps",
        "customresourcedefinitions.apiextensions.k8s.io",
        "workloadentries.networking.istio.io",
        "virtualservices.networking.istio.io",
        "peerauthentications.security.istio.io",
        "gateways.gateway.networking.k8s.io",
        "serviceexports.multicluster.x-k8s.io",
        "tokenreviews.authentication.k8s.io",
        "subjectaccessreviews.authorization.k8s.io",
        "clusterroles.rbac.authorization.k8s.io",
    ] {
        for verb in [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ] {
            for (ns, name) in [
                (None, None),
                (Some("istio-system"), None),
                (Some("istio-system"), Some("istio")),
                (Some("default"), None),
            ] {
                asked += 1;
                if allowed(&our_reader, verb, resource, ns, name).await {
                    ours_allowed += 1;
                    assert!(
                        allowed(&istio_reader, verb, resource, ns, name).await,
                        "federator's reader may {verb} {resource} {ns:?} {name:?}, istioctl's may not"
                    );
                }
            }
        }
    }
    figure(
        "access reviews asked of cluster-2 (federator's reader allowed, all ⊆ istioctl's)",
        format!("{ours_allowed} of {asked}"),
    );
    istiod_ref.stop().await;
    istiod_1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_member_does_not_hold_up_the_others_remote_secrets() {
    // cluster-4 joins while cluster-3's API server is down, in a trust domain of its own, so
    // the bundle changes too.
    let mut all = MEMBERS.to_vec();
    all.push(("cluster-4", "west.example"));
    let mut fed = Federation::start(&all, &[]).await;
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
    wait_remote_secrets(&fed, "cluster-1", &["cluster-2", "cluster-3"]).await;
    let istiod = fed.start_istiod("cluster-1", "cluster.local").await;
    wait_clusterz(
        &istiod,
        &["cluster-2", "cluster-3"],
        Duration::from_secs(90),
    )
    .await;
    let bundle_before = fed.federation_status().await.bundle_generation;

    fed.members["cluster-3"].cluster.stop().await;
    let start = Instant::now();
    fed.join("cluster-4");
    fed.install_mesh_config("cluster-4").await;
    fed.start_agent("cluster-4");
    wait_remote_secrets(&fed, "cluster-1", &["cluster-2", "cluster-3", "cluster-4"]).await;
    wait_remote_secrets(&fed, "cluster-2", &["cluster-1", "cluster-3", "cluster-4"]).await;
    wait_remote_secrets(&fed, "cluster-4", &["cluster-1", "cluster-2", "cluster-3"]).await;
    figure(
        "join of cluster-4 with cluster-3 down to the 3 reachable members holding all their remote secrets",
        format!("{:.1?}", start.elapsed()),
    );
    wait_for(
        "cluster-1's istiod to sync cluster-4 while cluster-3 is down",
        Duration::from_secs(90),
        || async {
            let z = clusterz(&istiod).await;
            eprintln!("cluster-1 clusterz: {z:?}");
            (z.get("cluster-4").map(String::as_str) == Some("synced")
                && z.get("cluster-2").map(String::as_str) == Some("synced"))
            .then_some(())
        },
    )
    .await;
    figure(
        "join of cluster-4 with cluster-3 down to cluster-1's istiod syncing it",
        format!("{:.1?}", start.elapsed()),
    );
    // The new trust domain reached the reachable members' cacerts; the hub reports cluster-3.
    fed.wait_healthy(
        &["cluster-1", "cluster-2", "cluster-4"],
        Duration::from_secs(90),
    )
    .await;
    assert!(fed.federation_status().await.bundle_generation > bundle_before);
    let problems = wait_for(
        "cluster-3 to be reported unreachable",
        Duration::from_secs(30),
        || async {
            let s = fed.member_cluster("cluster-3").await?.status?;
            (!federator_api::condition::is_true(&s.conditions, "Reachable"))
                .then(|| s.problems.join("; "))
        },
    )
    .await;
    assert!(problems.contains("cannot"), "{problems}");
    let out = fed.federator(&["status", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c3 = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cluster-3")
        .unwrap();
    assert_eq!(c3["healthy"], false, "{c3}");

    // cluster-3 comes back and gets the remote secret for cluster-4 too.
    let start = Instant::now();
    fed.members["cluster-3"]
        .cluster
        .start_again()
        .await
        .unwrap();
    wait_remote_secrets(&fed, "cluster-3", &["cluster-1", "cluster-2", "cluster-4"]).await;
    figure(
        "cluster-3's API server back to its remote secret for cluster-4",
        format!("{:.1?}", start.elapsed()),
    );
    istiod.stop().await;
}
