//! The hub's credential in a member cannot read any Secret, checked with
//! SelfSubjectAccessReview against the real API server; join names every missing permission
//! of a weak kubeconfig and writes nothing; an agent Deployment that nothing rolls out and an
//! unreachable cluster give clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use federator_api::hub::MemberCluster;
use federator_api::names;
use federator_e2e::*;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_credential_cannot_read_secrets_and_weak_or_dead_clusters_are_refused() {
    let fed = Federation::start(
        &[
            ("c1", "cluster.local"),
            ("weak", "cluster.local"),
            ("dead", "cluster.local"),
        ],
        &[],
    )
    .await;

    // init against a hub that already has another root refuses, and changes nothing.
    let other = fed.dir.join("other-root");
    fed.federator_ok(&["ca", "init", "--out", other.to_str().unwrap()]);
    let out = fed.federator(&[
        "init",
        "--root",
        "import",
        "--cert",
        other.join("root-cert.pem").to_str().unwrap(),
        "--key",
        other.join("root-key.pem").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to change it to import"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fed.join("c1");

    // The hub's stored credential for c1.
    let hub = fed.hub.client().await.unwrap();
    let secret = Api::<Secret>::namespaced(hub.clone(), names::NAMESPACE)
        .get(&names::member_credential_secret("c1"))
        .await
        .unwrap();
    let kubeconfig =
        String::from_utf8(secret.data.unwrap()[names::KUBECONFIG_KEY].0.clone()).unwrap();
    assert!(
        !kubeconfig.contains("client-key-data"),
        "only a token, never the admin's client key"
    );
    let hub_in_c1 = testbed::cluster::client_from_yaml(&kubeconfig)
        .await
        .unwrap();
    for verb in ["get", "list", "watch"] {
        for ns in [
            Some(names::NAMESPACE),
            Some(names::ISTIO_NAMESPACE),
            Some("kube-system"),
            Some("default"),
            None,
        ] {
            assert!(
                !allowed(&hub_in_c1, verb, "secrets", ns, None).await,
                "hub may {verb} secrets in {ns:?}"
            );
        }
    }
    assert!(
        allowed(
            &hub_in_c1,
            "patch",
            "clustertrusts.federator.io",
            Some(names::NAMESPACE),
            None
        )
        .await
    );
    assert!(!allowed(&hub_in_c1, "create", "pods", Some(names::NAMESPACE), None).await);
    // And the real API server agrees when asked for one.
    let err = Api::<Secret>::namespaced(hub_in_c1, names::ISTIO_NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");

    // A kubeconfig without the needed rights: every missing permission is named, nothing is written.
    let weak = &fed.members["weak"].cluster;
    let weak_kc = fed.dir.join("weak-user.kubeconfig");
    weak.write_kubeconfig_for_user("alice", &[], &weak_kc)
        .unwrap();
    let out = fed.federator(&[
        "join",
        "cluster",
        "weak",
        "--kubeconfig",
        weak_kc.to_str().unwrap(),
        "--agent-mode",
        "external",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needed in [
        "create customresourcedefinitions",
        "create namespaces",
        "patch roles.rbac.authorization.k8s.io in namespace istio-system",
        "create serviceaccounts/token in namespace federator-system",
    ] {
        assert!(err.contains(needed), "missing {needed:?} in: {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    let weak_admin = weak.client().await.unwrap();
    assert!(
        Api::<Namespace>::all(weak_admin)
            .get_opt(names::NAMESPACE)
            .await
            .unwrap()
            .is_none(),
        "nothing written in the member"
    );
    let members: Api<MemberCluster> = Api::namespaced(hub.clone(), names::NAMESPACE);
    assert!(
        members.get_opt("weak").await.unwrap().is_none(),
        "nothing written on the hub"
    );

    // The default agent mode on a cluster that runs no controller-manager (a node-less
    // testbed cluster): the Deployment never rolls out; join says why after --wait, and the
    // hub is not changed.
    let out = fed.federator(&[
        "join",
        "cluster",
        "weak",
        "--kubeconfig",
        weak.kubeconfig_path().to_str().unwrap(),
        "--wait",
        "3s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not available after 3s"), "{err}");
    assert!(
        err.contains("does the cluster run a kube-controller-manager?"),
        "{err}"
    );
    assert!(err.contains("The hub was not changed"), "{err}");
    assert!(members.get_opt("weak").await.unwrap().is_none());

    // An unreachable cluster.
    let dead = &fed.members["dead"].cluster;
    dead.stop().await;
    let out = fed.federator(&[
        "join",
        "cluster",
        "dead",
        "--kubeconfig",
        dead.kubeconfig_path().to_str().unwrap(),
        "--agent-mode",
        "external",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the API server") || err.contains("did not answer"),
        "{err}"
    );
    assert!(members.get_opt("dead").await.unwrap().is_none());
    assert!(
        Api::<Secret>::namespaced(hub, names::NAMESPACE)
            .get_opt(&names::member_credential_secret("dead"))
            .await
            .unwrap()
            .is_none()
    );
}
