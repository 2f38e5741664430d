//! Real behaviour of a 3-cluster testbed: isolation, watches, RBAC, service-account tokens.
//!
//! Each test starts its own testbed (a few seconds) and needs the binaries from
//! `tools/build.sh`; without them every test fails with that instruction, none is skipped.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use testbed::{Testbed, TestbedOptions};

async fn three_clusters() -> Testbed {
    match Testbed::start(TestbedOptions::clusters(3)).await {
        Ok(tb) => tb,
        Err(e) => panic!("testbed did not start: {e}"),
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test]
async fn a_secret_created_in_cluster_2_is_absent_from_cluster_1_and_3() {
    let tb = three_clusters().await;
    let c2 = tb.cluster("cluster-2").unwrap().client().await.unwrap();
    let secret = Secret {
        metadata: meta("only-in-cluster-2"),
        string_data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(c2.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let got = Api::<Secret>::namespaced(c2, "default")
        .get("only-in-cluster-2")
        .await
        .unwrap();
    assert_eq!(got.data.unwrap()["k"].0, b"v");

    for other in ["cluster-1", "cluster-3"] {
        let client = tb.cluster(other).unwrap().client().await.unwrap();
        let api = Api::<Secret>::namespaced(client, "default");
        let err = api.get("only-in-cluster-2").await.unwrap_err();
        assert_eq!(status_code(&err), Some(404), "{other}: {err}");
        let names: Vec<String> = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        assert!(
            !names.contains(&"only-in-cluster-2".to_owned()),
            "{other}: {names:?}"
        );
    }
    // Each cluster has its own server, CA and issuer.
    let servers: std::collections::BTreeSet<_> = tb
        .clusters()
        .iter()
        .map(|c| c.server().to_owned())
        .collect();
    let cas: std::collections::BTreeSet<_> = tb
        .clusters()
        .iter()
        .map(|c| c.ca_pem().to_owned())
        .collect();
    assert_eq!((servers.len(), cas.len()), (3, 3));
}

#[tokio::test]
async fn a_watch_sees_an_update() {
    let tb = three_clusters().await;
    let client = tb.cluster("cluster-3").unwrap().client().await.unwrap();
    let api = Api::<ConfigMap>::namespaced(client, "default");
    let cm = ConfigMap {
        metadata: meta("watched"),
        data: Some(BTreeMap::from([("phase".to_owned(), "one".to_owned())])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm).await.unwrap();

    let cfg = watcher::Config::default().fields("metadata.name=watched");
    let mut stream = watcher(api.clone(), cfg).applied_objects().boxed();
    // The initial listing shows the current object.
    let first = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
        .await
        .expect("no initial event")
        .unwrap()
        .unwrap();
    assert_eq!(first.data.unwrap()["phase"], "one");

    let patch = serde_json::json!({ "data": { "phase": "two" } });
    api.patch("watched", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let updated = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(cm) = stream.try_next().await.unwrap() {
            if cm
                .data
                .as_ref()
                .and_then(|d| d.get("phase"))
                .map(String::as_str)
                == Some("two")
            {
                return cm;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the watch did not deliver the update within 30 s");
    assert_eq!(updated.metadata.name.as_deref(), Some("watched"));
}

#[tokio::test]
async fn a_role_with_resource_names_allows_one_secret_and_forbids_another() {
    let tb = three_clusters().await;
    let cluster = tb.cluster("cluster-1").unwrap();
    let admin = cluster.client().await.unwrap();
    let ns = "default";

    for name in ["allowed", "forbidden"] {
        let s = Secret {
            metadata: meta(name),
            string_data: Some(BTreeMap::from([("k".to_owned(), name.to_owned())])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }
    // No controller-manager: the ServiceAccount must be created explicitly.
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("reader"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let role = Role {
        metadata: meta("read-one-secret"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(vec!["allowed".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: meta("read-one-secret"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "read-one-secret".into(),
        },
        subjects: Some(vec![
            Subject {
                kind: "ServiceAccount".into(),
                name: "reader".into(),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            Subject {
                kind: "Group".into(),
                name: "secret-readers".into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Default::default()
            },
        ]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // As the ServiceAccount, with a TokenRequest token.
    let token = cluster
        .token_request(ns, "reader", &[], Some(600))
        .await
        .unwrap();
    let sa = Api::<Secret>::namespaced(cluster.client_for_token(&token).await.unwrap(), ns);
    // As a client-certificate user in the bound group.
    let alice = Api::<Secret>::namespaced(
        cluster
            .client_for_user("alice", &["secret-readers"])
            .await
            .unwrap(),
        ns,
    );
    // As a client-certificate user in no bound group.
    let mallory =
        Api::<Secret>::namespaced(cluster.client_for_user("mallory", &[]).await.unwrap(), ns);

    for (who, api) in [("serviceaccount", &sa), ("alice", &alice)] {
        let s = api
            .get("allowed")
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        assert_eq!(s.data.unwrap()["k"].0, b"allowed");
        let err = api.get("forbidden").await.unwrap_err();
        assert_eq!(status_code(&err), Some(403), "{who}: {err}");
        let err = api.list(&Default::default()).await.unwrap_err();
        assert_eq!(status_code(&err), Some(403), "{who} list: {err}");
    }
    let err = mallory.get("allowed").await.unwrap_err();
    assert_eq!(status_code(&err), Some(403), "mallory: {err}");
}

#[tokio::test]
async fn a_token_request_token_authenticates_and_only_its_own_cluster_accepts_it() {
    let tb = three_clusters().await;
    let c1 = tb.cluster("cluster-1").unwrap();
    let c2 = tb.cluster("cluster-2").unwrap();
    let admin1 = c1.client().await.unwrap();
    Api::<ServiceAccount>::namespaced(admin1.clone(), "default")
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("robot"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let token = c1
        .token_request(
            "default",
            "robot",
            &[c1.service_account_issuer()],
            Some(600),
        )
        .await
        .unwrap();
    let expected_user = "system:serviceaccount:default:robot";

    // The token authenticates against cluster-1 ...
    let ssr = Api::<SelfSubjectReview>::all(c1.client_for_token(&token).await.unwrap())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = ssr.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some(expected_user));

    // ... cluster-1's TokenReview validates it ...
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.clone(),
            audiences: Some(vec![c1.service_account_issuer().to_owned()]),
        },
        ..Default::default()
    };
    let r1 = Api::<TokenReview>::all(admin1)
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(r1.authenticated, Some(true), "{r1:?}");
    assert_eq!(r1.user.unwrap().username.as_deref(), Some(expected_user));

    // ... and cluster-2 rejects it, both in TokenReview and as a bearer token.
    let r2 = Api::<TokenReview>::all(c2.client().await.unwrap())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(r2.authenticated, Some(true), "{r2:?}");
    let err = Api::<SelfSubjectReview>::all(c2.client_for_token(&token).await.unwrap())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), Some(401), "{err}");
}
