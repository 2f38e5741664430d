//! The `vault` root backend against a real OpenBao: Vault signs every cluster CA, its root key
//! exists nowhere else, AppRole and Kubernetes auth work (the latter validated by OpenBao with a
//! TokenReview against the hub's API server), an outage or a seal during a renewal is survived
//! without a gap in trust, and a policy without the needed capability is named precisely.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use federator_api::hub::RotationPhase;
use federator_api::names;
use federator_core::key::PrivateKey;
use federator_e2e::rotation::{Rotation, sigkill_and_abort_in};
use federator_e2e::*;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde_json::json;
use testbed::Bao;

/// The hub's policy, as examples/vault/ documents it.
const POLICY: &str = include_str!("../../examples/vault/federator-hub.hcl");

async fn bao_ok(bao: &Bao, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = bao.post(path, &body).await.unwrap();
    assert!(r.is_success(), "POST {path}: {} {}", r.status, r.body);
    if r.body.trim().is_empty() {
        json!({})
    } else {
        r.json().unwrap()
    }
}

/// Vault's root certificate (DER) and its raw public key.
async fn vault_root(bao: &Bao) -> (Vec<u8>, Vec<u8>) {
    let r = bao
        .get("pki/issuer/default/json")
        .await
        .unwrap()
        .json()
        .unwrap();
    let pem = r["data"]["certificate"].as_str().unwrap().to_owned();
    let der = federator_core::cert::parse_pem_certificates(pem.as_bytes(), "vault root")
        .unwrap()
        .remove(0);
    let key = federator_core::cert::parse_der(&der)
        .unwrap()
        .public_key()
        .subject_public_key
        .data
        .to_vec();
    (der, key)
}

fn write_secret_file(fed: &Federation, name: &str, content: &str) -> String {
    let path = fed.dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn start_members(fed: &mut Federation, members: &[&str]) {
    for m in members {
        fed.join(m);
    }
    fed.start_serve(&[]);
    for m in members {
        fed.start_agent(m);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_signs_and_the_root_key_never_leaves_it() {
    let mut fed = Federation::without_init(
        "hub",
        &[("c1", "cluster.local"), ("c2", "c2.example")],
        None,
    )
    .await;
    let bao = fed.testbed.start_bao().await.unwrap();
    let token = write_secret_file(&fed, "vault-token", bao.token());
    let out = fed.federator_ok(&[
        "init",
        "--root",
        "vault",
        "--vault-addr",
        bao.addr(),
        "--vault-token-file",
        &token,
        "--vault-bootstrap",
    ]);
    assert!(out.contains("generated an internal root"), "{out}");
    start_members(&mut fed, &["c1", "c2"]).await;
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(90))
        .await;

    let (root_der, root_key) = vault_root(&bao).await;
    let mut files = BTreeMap::new();
    for m in ["c1", "c2"] {
        let f = fed.cacerts(m).await.unwrap();
        let roots =
            federator_core::cert::parse_pem_certificates(&f["root-cert.pem"], "roots").unwrap();
        assert_eq!(
            roots,
            vec![root_der.clone()],
            "{m}: the bundle is Vault's root"
        );
        let chain =
            federator_core::cert::parse_pem_certificates(&f["cert-chain.pem"], "chain").unwrap();
        assert_eq!(
            chain.last(),
            Some(&root_der),
            "{m}: the chain Vault returned, up to its root"
        );
        files.insert(m, f);
    }
    for (from, td) in [("c1", "cluster.local"), ("c2", "c2.example")] {
        let leaf = mint_leaf(&files[from], &format!("spiffe://{td}/ns/a/sa/b"));
        for to in ["c1", "c2"] {
            verifies(&leaf, &files[to]).unwrap_or_else(|e| panic!("{from} at {to}: {e}"));
        }
    }

    // No private key matching Vault's root exists in any Secret of the hub or the members.
    let mut keys_seen = 0;
    for cluster in [
        &fed.hub,
        &fed.members["c1"].cluster,
        &fed.members["c2"].cluster,
    ] {
        let secrets: Api<Secret> = Api::all(cluster.client().await.unwrap());
        for s in secrets.list(&ListParams::default()).await.unwrap() {
            for (k, v) in s.data.unwrap_or_default() {
                let text = String::from_utf8_lossy(&v.0);
                if text.contains("PRIVATE KEY") {
                    let key = PrivateKey::from_pem(&v.0, &k).unwrap();
                    keys_seen += 1;
                    assert_ne!(
                        key.public_key_raw(),
                        root_key.as_slice(),
                        "Vault's root key found in {}/{k}",
                        cluster.name()
                    );
                }
            }
        }
    }
    assert!(
        keys_seen >= 4,
        "the scan saw the agents' keys ({keys_seen}), so it looked in the right places"
    );
    let roots_secret = Api::<Secret>::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE)
        .get(names::ROOTS_SECRET)
        .await
        .unwrap();
    assert_eq!(
        roots_secret.data.unwrap().keys().collect::<Vec<_>>(),
        vec!["vault-token"],
        "only the hub's credential"
    );

    // A token whose policy cannot sign: the error names the path and the capability.
    bao_ok(&bao, "sys/policies/acl/read-only", json!({ "policy": "path \"pki/issuer/+/json\" { capabilities = [\"read\"] }\npath \"pki/issuer/+\" { capabilities = [\"read\"] }" })).await;
    let weak = bao_ok(
        &bao,
        "auth/token/create",
        json!({ "policies": ["read-only"] }),
    )
    .await;
    let weak_token = weak["auth"]["client_token"].as_str().unwrap();
    let hub_secrets: Api<Secret> =
        Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    let mut s = hub_secrets.get(names::ROOTS_SECRET).await.unwrap();
    s.data.as_mut().unwrap().insert(
        "vault-token".into(),
        k8s_openapi::ByteString(weak_token.as_bytes().to_vec()),
    );
    s.metadata.managed_fields = None;
    hub_secrets
        .replace(names::ROOTS_SECRET, &PostParams::default(), &s)
        .await
        .unwrap();
    fed.serve.as_mut().unwrap().kill();
    fed.start_serve(&[]);
    // Ask for a renewal, as the hub would when due.
    let trusts: Api<federator_api::member::ClusterTrust> = Api::namespaced(
        fed.members["c1"].cluster.client().await.unwrap(),
        names::NAMESPACE,
    );
    let ct = trusts.get(names::CLUSTER_TRUST).await.unwrap();
    let bump = json!({ "spec": { "csrGeneration": ct.spec.csr_generation + 1 } });
    trusts
        .patch(
            names::CLUSTER_TRUST,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&bump),
        )
        .await
        .unwrap();
    let problem = wait_for(
        "the hub to report Vault's denial",
        Duration::from_secs(60),
        || async {
            let p = fed.member_cluster("c1").await?.status?.problems.join("; ");
            p.contains("permission denied").then_some(p)
        },
    )
    .await;
    assert!(
        problem.contains(
            "needs the \"update\" capability on path \"pki/issuer/default/sign-intermediate\""
        ),
        "{problem}"
    );
    // Members keep their last good material meanwhile.
    assert!(
        federator_core::cacerts::inspect(
            &fed.cacerts("c1").await.unwrap(),
            time::OffsetDateTime::now_utc()
        )
        .is_ok()
    );
    // Fix the policy in Vault: the hub's retries succeed.
    bao_ok(
        &bao,
        "sys/policies/acl/read-only",
        json!({ "policy": POLICY }),
    )
    .await;
    wait_for(
        "the renewal to go through once the policy allows it",
        Duration::from_secs(90),
        || async {
            let ct = trusts.get(names::CLUSTER_TRUST).await.ok()?;
            (ct.spec.signed?.generation == ct.spec.csr_generation).then_some(())
        },
    )
    .await;
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(60))
        .await;
}

async fn approle_and_policy(bao: &Bao, token_ttl: &str) -> (String, String) {
    bao_ok(
        bao,
        "sys/policies/acl/federator",
        json!({ "policy": POLICY }),
    )
    .await;
    bao_ok(bao, "sys/auth/approle", json!({ "type": "approle" })).await;
    bao_ok(bao, "auth/approle/role/federator", json!({ "token_policies": ["federator"], "token_ttl": token_ttl, "token_max_ttl": token_ttl })).await;
    let role_id = bao
        .get("auth/approle/role/federator/role-id")
        .await
        .unwrap()
        .json()
        .unwrap()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id =
        bao_ok(bao, "auth/approle/role/federator/secret-id", json!({})).await["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
    (role_id, secret_id)
}

/// Enables the PKI engine at `pki/` and generates an internal root there, with the dev root
/// token (as an operator would).
async fn pki_with_root(bao: &Bao, common_name: &str) {
    let mount = json!({ "type": "pki", "config": { "max_lease_ttl": "87600h" } });
    bao_ok(bao, "sys/mounts/pki", mount).await;
    let root =
        json!({ "common_name": common_name, "ttl": "87600h", "key_type": "ec", "key_bits": 256 });
    bao_ok(bao, "pki/root/generate/internal", root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_with_short_tokens_logs_in_again() {
    let mut fed = Federation::without_init("hub", &[("c1", "cluster.local")], None).await;
    let bao = fed.testbed.start_bao().await.unwrap();
    // Bootstrap the PKI with the dev root token (as an operator would), then hand the hub only
    // an AppRole whose tokens live 8 seconds.
    pki_with_root(&bao, "approle test root").await;
    let (role_id, secret_id) = approle_and_policy(&bao, "8s").await;
    let secret_file = write_secret_file(&fed, "secret-id", &secret_id);
    fed.federator_ok(&[
        "init",
        "--root",
        "vault",
        "--vault-addr",
        bao.addr(),
        "--vault-auth",
        "approle",
        "--vault-role-id",
        &role_id,
        "--vault-secret-id-file",
        &secret_file,
        "--cluster-ca-ttl",
        "30s",
        "--renew-at-percent",
        "50",
    ]);
    start_members(&mut fed, &["c1"]).await;
    fed.wait_healthy(&["c1"], Duration::from_secs(60)).await;
    let first = fed
        .cluster_trust("c1")
        .await
        .unwrap()
        .spec
        .signed
        .unwrap()
        .serial;
    // The renewal lands after the first token expired: the hub must log in again.
    wait_for(
        "a renewal signed with a fresh AppRole login",
        Duration::from_secs(60),
        || async {
            let s = fed.cluster_trust("c1").await?.spec.signed?.serial;
            (s != first).then_some(())
        },
    )
    .await;
    fed.wait_healthy(&["c1"], Duration::from_secs(60)).await;
    assert!(
        fed.serve
            .as_ref()
            .unwrap()
            .log_tail(400)
            .contains("logged in to Vault again")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_auth_is_validated_by_openbao_and_rotate_root_logs_in_with_it() {
    let mut fed = Federation::without_init("hub", &[("c1", "cluster.local")], None).await;
    let bao = fed.testbed.start_bao().await.unwrap();
    pki_with_root(&bao, "k8s auth test root").await;
    bao_ok(
        &bao,
        "sys/policies/acl/federator",
        json!({ "policy": POLICY }),
    )
    .await;

    // In the hub cluster: the hub's ServiceAccount, and a reviewer OpenBao uses for TokenReview.
    let hub = fed.hub.client().await.unwrap();
    let _ = Api::<Namespace>::all(hub.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(names::NAMESPACE.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
    let sas: Api<ServiceAccount> = Api::namespaced(hub.clone(), names::NAMESPACE);
    for sa in ["federator-serve", "vault-reviewer"] {
        sas.create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(sa.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    Api::<ClusterRoleBinding>::all(hub.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some("vault-reviewer".into()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: "system:auth-delegator".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "vault-reviewer".into(),
                    namespace: Some(names::NAMESPACE.into()),
                    api_group: None,
                }]),
            },
        )
        .await
        .unwrap();
    let reviewer = fed
        .hub
        .token_request(names::NAMESPACE, "vault-reviewer", &[], Some(3600))
        .await
        .unwrap();
    bao_ok(&bao, "sys/auth/kubernetes", json!({ "type": "kubernetes" })).await;
    bao_ok(
        &bao,
        "auth/kubernetes/config",
        json!({
            "kubernetes_host": fed.hub.server(),
            "kubernetes_ca_cert": fed.hub.ca_pem(),
            "token_reviewer_jwt": reviewer,
            "disable_local_ca_jwt": true,
        }),
    )
    .await;
    bao_ok(
        &bao,
        "auth/kubernetes/role/federator-hub",
        json!({
            "bound_service_account_names": ["federator-serve"],
            "bound_service_account_namespaces": [names::NAMESPACE],
            "token_policies": ["federator"],
            "token_ttl": "1h",
        }),
    )
    .await;
    let jwt = fed
        .hub
        .token_request(names::NAMESPACE, "federator-serve", &[], Some(3600))
        .await
        .unwrap();
    let jwt_file = write_secret_file(&fed, "hub-sa-token", &jwt);

    // A JWT of another ServiceAccount is refused by OpenBao (TokenReview + role binding).
    let wrong = write_secret_file(&fed, "wrong-token", &reviewer);
    let out = fed.federator(&[
        "init",
        "--root",
        "vault",
        "--vault-addr",
        bao.addr(),
        "--vault-auth",
        "kubernetes",
        "--vault-role",
        "federator-hub",
        "--vault-jwt-file",
        &wrong,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Kubernetes login at auth/kubernetes/login"),
        "{err}"
    );

    fed.federator_ok(&[
        "init",
        "--root",
        "vault",
        "--vault-addr",
        bao.addr(),
        "--vault-auth",
        "kubernetes",
        "--vault-role",
        "federator-hub",
        "--vault-jwt-file",
        &jwt_file,
    ]);
    start_members(&mut fed, &["c1"]).await;
    fed.wait_healthy(&["c1"], Duration::from_secs(60)).await;

    // rotate-root logs in as the hub does. Where the token file the hub reads does not exist
    // (an operator's laptop: here moved away), it says what to pass; a token of another
    // ServiceAccount is refused by OpenBao; with the hub's token it starts the rotation.
    let second = json!({ "common_name": "second root", "ttl": "87600h", "key_type": "ec", "key_bits": 256, "issuer_name": "second" });
    bao_ok(&bao, "pki/root/generate/internal", second).await;
    let elsewhere = format!("{jwt_file}.elsewhere");
    std::fs::rename(&jwt_file, &elsewhere).unwrap();
    let rotate = ["rotate-root", "--vault-issuer", "second", "--drain", "2s"];
    let out = fed.federator(&rotate);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("reading its ServiceAccount token from {jwt_file}"))
            && err.contains("pass --vault-jwt-file"),
        "{err}"
    );
    let out = fed.federator(&[&rotate[..], &["--vault-jwt-file", &wrong]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Kubernetes login at auth/kubernetes/login"),
        "{err}"
    );
    assert!(
        fed.federation_status().await.rotations.is_empty(),
        "nothing started"
    );
    fed.federator_ok(&[&rotate[..], &["--vault-jwt-file", &elsewhere]].concat());
    std::fs::rename(&elsewhere, &jwt_file).unwrap();
    let (phases, _) = follow_rotation(&fed, &[("c1", "cluster.local")], None).await;
    assert!(phases.contains("draining"), "{phases:?}");
    let second_root = federator_core::cert::fingerprint(&issuer_root(&bao, "second").await);
    fed.wait_all_on_root(&["c1"], &second_root).await;
    assert_eq!(federation_issuer(&fed).await, "second");
}

/// The unseal key a dev server printed at start.
fn unseal_key(bao: &Bao) -> String {
    let log = std::fs::read_to_string(bao.log_path()).unwrap();
    log.lines()
        .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
        .expect("the dev server prints its unseal key")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_outage_and_seal_during_renewal_keep_trust() {
    let mut fed = Federation::without_init(
        "hub",
        &[("c1", "cluster.local"), ("c2", "c2.example")],
        None,
    )
    .await;
    let bao = fed.testbed.start_bao().await.unwrap();
    let token = write_secret_file(&fed, "vault-token", bao.token());
    fed.federator_ok(&[
        "init",
        "--root",
        "vault",
        "--vault-addr",
        bao.addr(),
        "--vault-token-file",
        &token,
        "--vault-bootstrap",
        "--cluster-ca-ttl",
        "60s",
        "--renew-at-percent",
        "25",
    ]);
    start_members(&mut fed, &["c1", "c2"]).await;
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(60))
        .await;

    // Trust is checked continuously while Vault is unavailable and while it is sealed.
    let check = |files: &BTreeMap<&str, BTreeMap<String, Vec<u8>>>| {
        for (from, td) in [("c1", "cluster.local"), ("c2", "c2.example")] {
            let leaf = mint_leaf(&files[from], &format!("spiffe://{td}/ns/a/sa/b"));
            for to in ["c1", "c2"] {
                verifies(&leaf, &files[to])
                    .unwrap_or_else(|e| panic!("trust gap: {from} at {to}: {e}"));
            }
        }
    };
    let snapshot = || async {
        let mut files = BTreeMap::new();
        for m in ["c1", "c2"] {
            files.insert(m, fed.cacerts(m).await.unwrap());
        }
        files
    };
    let serials = |files: &BTreeMap<&str, BTreeMap<String, Vec<u8>>>| -> Vec<String> {
        files
            .values()
            .map(|f| {
                federator_core::cacerts::inspect(f, time::OffsetDateTime::now_utc())
                    .ca
                    .unwrap()
                    .serial
            })
            .collect()
    };
    let before = serials(&snapshot().await);

    // 1. Vault stops answering (SIGSTOP keeps its in-memory state) across the renewal point.
    bao.pause();
    let mut saw_problem = false;
    let until = Instant::now() + Duration::from_secs(35);
    while Instant::now() < until {
        check(&snapshot().await);
        if let Some(s) = fed.member_cluster("c1").await.and_then(|m| m.status) {
            saw_problem |= s.problems.iter().any(|p| p.contains("Vault"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        saw_problem,
        "the hub reported the Vault outage in the member's status"
    );
    assert_eq!(
        serials(&snapshot().await),
        before,
        "nothing could be renewed while Vault was down"
    );
    bao.resume();
    wait_for(
        "renewals to complete once Vault is back",
        Duration::from_secs(60),
        || async {
            let now = serials(&snapshot().await);
            (now.iter().zip(&before).all(|(a, b)| a != b)).then_some(())
        },
    )
    .await;
    check(&snapshot().await);

    // 2. Vault sealed: the error says so; unsealing lets the next renewal through.
    bao_ok(&bao, "sys/seal", json!({})).await;
    let sealed_serials = serials(&snapshot().await);
    let problem = wait_for(
        "the hub to report the seal",
        Duration::from_secs(60),
        || async {
            check(&snapshot().await);
            let p = fed.member_cluster("c1").await?.status?.problems.join("; ");
            p.contains("sealed").then_some(p)
        },
    )
    .await;
    assert!(problem.contains(bao.addr()), "{problem}");
    let r = bao
        .post("sys/unseal", &json!({ "key": unseal_key(&bao) }))
        .await
        .unwrap();
    assert!(r.is_success(), "{}", r.body);
    wait_for(
        "renewals after unsealing",
        Duration::from_secs(90),
        || async {
            check(&snapshot().await);
            let now = serials(&snapshot().await);
            (now.iter().zip(&sealed_serials).all(|(a, b)| a != b)).then_some(())
        },
    )
    .await;
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(60))
        .await;
}

/// The extra policy for `rotate-root --vault-bootstrap`, as examples/vault/ documents it.
const ROTATE_BOOTSTRAP_POLICY: &str =
    include_str!("../../examples/vault/federator-hub-rotate-bootstrap.hcl");

/// The root (DER) of the issuer `issuer` in the mount `pki`.
async fn issuer_root(bao: &Bao, issuer: &str) -> Vec<u8> {
    let r = bao
        .get(&format!("pki/issuer/{issuer}/json"))
        .await
        .unwrap()
        .json()
        .unwrap();
    let mut pem = r["data"]["certificate"].as_str().unwrap().to_owned();
    for c in r["data"]["ca_chain"].as_array().into_iter().flatten() {
        pem += c.as_str().unwrap_or_default();
    }
    federator_core::cert::parse_pem_certificates(pem.as_bytes(), "issuer")
        .unwrap()
        .pop()
        .unwrap()
}

/// The Vault issuer the Federation names.
async fn federation_issuer(fed: &Federation) -> String {
    let api: Api<federator_api::hub::Federation> =
        Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    let f = api.get(names::FEDERATION).await.unwrap();
    f.spec.root.vault.unwrap().issuer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_issuer_rotates_with_expiring_tokens_and_survives_sigkill_and_abort_in_every_phase()
 {
    let all = [
        ("c1", "cluster.local"),
        ("c2", "cluster.local"),
        ("c3", "c3.example"),
    ];
    let names = ["c1", "c2", "c3"];
    let mut fed = Federation::without_init("hub", &all, None).await;
    let bao = fed.testbed.start_bao().await.unwrap();
    pki_with_root(&bao, "first root").await;
    let first = issuer_root(&bao, "default").await;
    // The hub logs in with an AppRole whose tokens live 8 s: they expire during the rotation.
    let (role_id, secret_id) = approle_and_policy(&bao, "8s").await;
    let secret_file = write_secret_file(&fed, "secret-id", &secret_id);
    fed.federator_ok(&[
        "init",
        "--root",
        "vault",
        "--vault-addr",
        bao.addr(),
        "--vault-auth",
        "approle",
        "--vault-role-id",
        &role_id,
        "--vault-secret-id-file",
        &secret_file,
        "--cluster-ca-ttl",
        "2h",
    ]);
    start_members(&mut fed, &names).await;
    fed.wait_healthy(&names, Duration::from_secs(90)).await;

    // Bad input, with the hub's own credential: refused with the reason, nothing changes.
    let short = json!({ "common_name": "short root", "ttl": "1h", "key_type": "ec", "key_bits": 256, "issuer_name": "short" });
    bao_ok(&bao, "pki/root/generate/internal", short).await;
    assert_eq!(
        issuer_root(&bao, "default").await,
        first,
        "a new issuer does not become the mount's default"
    );
    let hub_secrets: Api<Secret> =
        Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    let before = hub_secrets.get(names::ROOTS_SECRET).await.unwrap().data;
    for (issuer, code, why) in [
        ("short", 2, "before the cluster CAs signed under it would"),
        ("default", 2, "chains to the current root"),
        ("missing", 1, "pki/issuer/missing/json"),
    ] {
        let out = fed.federator(&["rotate-root", "--vault-issuer", issuer]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{issuer}: {err}");
        assert!(err.contains(why), "{issuer}: {err}");
    }
    let out = fed.federator(&["rotate-root", "--vault-bootstrap"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs the \"update\" capability on path \"pki/root/rotate/internal\""),
        "the hub policy alone cannot generate a root: {err}"
    );
    assert_eq!(
        hub_secrets.get(names::ROOTS_SECRET).await.unwrap().data,
        before,
        "nothing changed"
    );

    let watch = fed.watch_cacerts(&all, Duration::from_millis(100));
    let old_leaf = mint_leaf(
        &fed.cacerts("c1").await.unwrap(),
        "spiffe://cluster.local/ns/a/sa/old",
    );

    // 1. To an issuer the operator made, with nothing but the hub policy.
    let second = json!({ "common_name": "second root", "ttl": "87600h", "key_type": "ec", "key_bits": 256, "issuer_name": "second" });
    bao_ok(&bao, "pki/root/generate/internal", second).await;
    let second_root = issuer_root(&bao, "second").await;
    let logins = |fed: &Federation| {
        fed.serve
            .as_ref()
            .unwrap()
            .log_tail(100_000)
            .matches("logged in to Vault again")
            .count()
    };
    let drain = Duration::from_secs(6);
    let started = Instant::now();
    fed.federator_ok(&["rotate-root", "--vault-issuer", "second", "--drain", "6s"]);
    let (phases, old_leaf_ok) = follow_rotation(&fed, &all, Some((&old_leaf, "c3"))).await;
    let wall = started.elapsed();
    assert!(phases.contains("draining"), "{phases:?}");
    assert!(
        old_leaf_ok,
        "workload certificates of the first root work while draining"
    );
    fed.wait_all_on_root(&names, &federator_core::cert::fingerprint(&second_root))
        .await;
    for m in names {
        assert!(
            verifies(&old_leaf, &fed.cacerts(m).await.unwrap()).is_err(),
            "{m}"
        );
    }
    assert_eq!(
        federation_issuer(&fed).await,
        "second",
        "the Federation points at the new issuer"
    );

    // 2. To a root Vault generates (the bootstrap policy added), the hub's token expiring while
    // the rotation waits, aborted while draining: every member goes back to the second root,
    // which the Federation keeps naming.
    let role = json!({ "token_policies": ["federator", "federator-rotate"], "token_ttl": "8s", "token_max_ttl": "8s" });
    bao_ok(
        &bao,
        "sys/policies/acl/federator-rotate",
        json!({ "policy": ROTATE_BOOTSTRAP_POLICY }),
    )
    .await;
    bao_ok(&bao, "auth/approle/role/federator", role).await;
    // c3's agent frozen holds the rotation in trusting-new-root past the life of the token
    // the hub logged in with when the rotation started: it signs the re-signing with a new one.
    fed.agent_process("c3").pause();
    let logins_before = logins(&fed);
    let out = fed.federator_ok(&["rotate-root", "--vault-bootstrap", "--drain", "20s"]);
    assert!(out.contains("vault: generated a new root"), "{out}");
    wait_for(
        "the generated issuer's rotation to wait for c3",
        Duration::from_secs(30),
        || async {
            let r = fed.federation_status().await.rotations.into_iter().next()?;
            r.waiting_for.iter().any(|w| w.member == "c3").then_some(())
        },
    )
    .await;
    // A member renewing now gets a CA from the second issuer, whose root c3 (frozen, its
    // bundle without the generated root) trusts.
    fed.federator_ok(&["renew", "cluster", "c1", "--now"]);
    assert_eq!(
        fed.chain_root("c1").await,
        federator_core::cert::fingerprint(&second_root),
        "renewed during trusting-new-root: signed by the issuer every member trusts"
    );
    tokio::time::sleep(Duration::from_secs(9)).await;
    fed.agent_process("c3").resume();
    let draining = wait_for(
        "the generated issuer's rotation to drain",
        Duration::from_secs(20),
        || async {
            let r = fed.federation_status().await.rotations.into_iter().next()?;
            (r.phase.to_string() == "draining").then_some(r)
        },
    )
    .await;
    assert_ne!(
        draining.sha256,
        federator_core::cert::fingerprint(&second_root)
    );
    assert!(
        logins(&fed) > logins_before,
        "the hub's Vault token expired during the rotation and it logged in again"
    );
    let out = fed.federator_ok(&["rotate-root", "--abort"]);
    assert!(
        out.contains(&federator_core::cert::fingerprint(&second_root)),
        "{out}"
    );
    let (phases, _) = follow_rotation(&fed, &all, None).await;
    assert!(
        phases.contains("re-signing"),
        "members moved back: {phases:?}"
    );
    fed.wait_all_on_root(&names, &federator_core::cert::fingerprint(&second_root))
        .await;
    assert_eq!(federation_issuer(&fed).await, "second");

    // 3. Held in each phase (the hub logging in again after its restart), SIGKILLed and
    // restarted there, aborted: back to the second issuer every time.
    let second_sha = federator_core::cert::fingerprint(&second_root);
    for (phase, issuer) in [
        (RotationPhase::TrustingNewRoot, "third"),
        (RotationPhase::ReSigning, "fourth"),
        (RotationPhase::Draining, "fifth"),
    ] {
        let root = json!({ "common_name": format!("{issuer} root"), "ttl": "87600h", "key_type": "ec", "key_bits": 256, "issuer_name": issuer });
        bao_ok(&bao, "pki/root/generate/internal", root).await;
        let rotation = Rotation {
            start: &["--vault-issuer", issuer],
            abort: &[],
            scope: "*",
            members: &all,
            frozen: "c3",
            old_root: &second_sha,
        };
        let new_root = sigkill_and_abort_in(&mut fed, phase, &rotation).await;
        assert_eq!(
            new_root,
            federator_core::cert::fingerprint(&issuer_root(&bao, issuer).await)
        );
        assert_eq!(federation_issuer(&fed).await, "second");
    }

    let report = watch.stop().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.rounds > 20, "{report:?}");
    println!(
        "figure: Vault issuer rotation of 3 members: {:.1}s wall, {:.1}s without the {}s drain; {} trust rounds, no gap",
        wall.as_secs_f64(),
        (wall - drain).as_secs_f64(),
        drain.as_secs(),
        report.rounds
    );
    fed.wait_healthy(&names, Duration::from_secs(60)).await;
}
