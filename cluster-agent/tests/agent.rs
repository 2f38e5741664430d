//! The `cluster-agent` binary against a real kube-apiserver, under its own least-privilege
//! token (the Roles of `rbac::agent_roles()`), with the test playing the hub.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use federator_api::condition;
use federator_api::member::{ClusterTrust, ClusterTrustStatus};
use federator_api::names;
use federator_core::bundle::TrustBundle;
use federator_core::cacerts;
use federator_core::cert::CertInfo;
use federator_core::identity::TrustDomain;
use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::ResourceAttributes;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::*;
use time::OffsetDateTime;

const WAIT: Duration = Duration::from_secs(60);

const MESH: &str = "\
accessLogFile: /dev/stdout
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
caCertificates:
- pem: |
    -----BEGIN CERTIFICATE-----
    not federator's
    -----END CERTIFICATE-----
  trustDomains:
  - partner.example
";

fn status_of(t: &ClusterTrust) -> ClusterTrustStatus {
    t.status.clone().unwrap_or_default()
}

/// Checks cacerts the way istiod and an independent verifier would.
fn assert_valid_cacerts(cc: &BTreeMap<String, Vec<u8>>) {
    let keys: Vec<&str> = cc.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem"
        ],
        "exactly istiod's four files"
    );
    let inspection = cacerts::inspect(cc, OffsetDateTime::now_utc());
    assert!(inspection.is_ok(), "{:?}", inspection.problems);
    openssl_verify(cc).unwrap();
}

fn bundle_pem(entries: &[(&str, &federator_core::ca::IssuingCa)]) -> String {
    let tds: Vec<(TrustDomain, String)> = entries
        .iter()
        .map(|(td, ca)| (TrustDomain::new(td).unwrap(), ca.cert_pem()))
        .collect();
    TrustBundle::from_domain_pems(tds.iter().map(|(t, p)| (t, p.as_str())))
        .unwrap()
        .to_pem()
}

async fn wait_ready(fx: &Fixture) -> ClusterTrustStatus {
    fx.wait_for("Ready=True", WAIT, || async {
        let s = status_of(&fx.trust().await);
        if condition::is_true(&s.conditions, "Ready") {
            Ok(s)
        } else {
            Err(format!("{:?} problems {:?}", s.conditions, s.problems))
        }
    })
    .await
}

#[tokio::test]
async fn installs_renews_and_follows_the_bundle() {
    let mut fx = Fixture::new(true).await;
    let setup = fx.started.elapsed();
    fx.create_istiod(Some("true")).await;
    fx.create_mesh_config(MESH).await;
    fx.start_agent();
    let root1 = root("cluster.local root");
    fx.create_trust(vec![entry(TD, &root1)], 1).await;

    // First install: the hub signs the published CSR.
    let csr1 = fx.wait_csr(1).await;
    assert!(csr1.contains("CERTIFICATE REQUEST") && !csr1.contains("PRIVATE KEY"));
    let signed1 = sign(&root1, &csr1, 1, TD);
    fx.patch_spec(json!({ "signed": signed1 })).await;
    let cc1 = fx.wait_installed(1, 1).await;
    assert_valid_cacerts(&cc1);
    assert_eq!(cc1["root-cert.pem"], root1.cert_pem().into_bytes());
    let st = status_of(&fx.trust().await);
    let inst = st.installed.clone().unwrap();
    let ca_info = CertInfo::from_der(
        &federator_core::cert::parse_pem_certificates(&cc1["ca-cert.pem"], "ca").unwrap()[0],
    )
    .unwrap();
    assert_eq!(inst.serial, signed1.serial);
    assert_eq!(inst.not_after, signed1.not_after);
    assert_eq!(inst.sha256, ca_info.sha256);
    let own = fx.agent_secret().await;
    assert_eq!(
        own["installed-key.pem"], cc1["ca-key.pem"],
        "cacerts projects the agent Secret"
    );
    assert_eq!(own["pending-key.pem"], own["installed-key.pem"]);
    // istiod existed without cacerts: self-signed mode, no watcher, so a restart.
    let restarted1 = fx
        .wait_for("the restart annotation on istiod", WAIT, || async {
            fx.restarted_at().await.ok_or_else(|| "none".to_owned())
        })
        .await;
    let st = wait_ready(&fx).await;
    let istiod = st.istiod.clone().unwrap();
    assert_eq!(
        (istiod.state.to_string().as_str(), istiod.multi_root),
        ("restarted", true),
        "{istiod:?}"
    );
    let cacerts_obj = fx.istio_secrets().get(names::CACERTS_SECRET).await.unwrap();
    assert!(
        !cacerts_obj
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("federator.io/istiod-restart-pending"),
        "the restart marker is cleared once the restart was requested"
    );
    let first_install = fx.started.elapsed();

    // Renewal: a fresh key and cluster CA, byte-identical roots, a hot reload.
    fx.patch_spec(json!({ "csrGeneration": 2 })).await;
    let csr2 = fx.wait_csr(2).await;
    assert_ne!(csr2, csr1);
    fx.patch_spec(json!({ "signed": sign(&root1, &csr2, 2, TD) }))
        .await;
    let cc2 = fx.wait_installed(2, 1).await;
    assert_valid_cacerts(&cc2);
    assert_ne!(
        cc2["ca-key.pem"], cc1["ca-key.pem"],
        "a renewal makes a fresh key"
    );
    assert_ne!(cc2["ca-cert.pem"], cc1["ca-cert.pem"]);
    assert_eq!(
        cc2["root-cert.pem"], cc1["root-cert.pem"],
        "root-cert.pem is byte-identical"
    );
    let st = wait_ready(&fx).await;
    assert_eq!(
        st.istiod.as_ref().unwrap().state.to_string(),
        "hot-reload",
        "{:?}",
        st.istiod
    );
    assert_eq!(
        fx.restarted_at().await,
        Some(restarted1.clone()),
        "no restart on renewal"
    );

    // A peer trust domain joins: a pure add of a root, hot-reloaded with multi-root, and a
    // caCertificates entry in the mesh config next to the unrelated one.
    let root2 = root("west.local root");
    fx.patch_spec(json!({
        "bundle": [entry(TD, &root1), entry(PEER_TD, &root2)],
        "bundleGeneration": 2,
    }))
    .await;
    let cc3 = fx.wait_installed(2, 2).await;
    assert_valid_cacerts(&cc3);
    assert_eq!(
        cc3["root-cert.pem"],
        bundle_pem(&[(TD, &root1), (PEER_TD, &root2)]).into_bytes()
    );
    assert_eq!(cc3["ca-cert.pem"], cc2["ca-cert.pem"]);
    let st = wait_ready(&fx).await;
    let istiod = st.istiod.unwrap();
    assert_eq!(istiod.state.to_string(), "hot-reload", "{istiod:?}");
    assert!(istiod.message.contains("pure add"), "{istiod:?}");
    assert_eq!(fx.restarted_at().await, Some(restarted1.clone()));
    let original: serde_yaml::Value = serde_yaml::from_str(MESH).unwrap();
    let mesh = fx
        .wait_for("the peer's caCertificates entry", WAIT, || async {
            let m = fx.mesh().await;
            match m["caCertificates"].as_sequence() {
                Some(s) if s.len() == 2 => Ok(m.clone()),
                _ => Err(format!("{m:?}")),
            }
        })
        .await;
    let certs = mesh["caCertificates"].as_sequence().unwrap();
    assert_eq!(
        certs[0], original["caCertificates"][0],
        "the unrelated entry is left alone"
    );
    assert_eq!(certs[1]["pem"].as_str(), Some(root2.cert_pem().as_str()));
    assert_eq!(certs[1]["trustDomains"][0].as_str(), Some(PEER_TD));
    assert_eq!(mesh["accessLogFile"], original["accessLogFile"]);
    assert_eq!(mesh["defaultConfig"], original["defaultConfig"]);
    let cm = fx.configmaps().get(names::ISTIO_CONFIGMAP).await.unwrap();
    assert!(
        cm.metadata.annotations.unwrap_or_default()[names::MANAGED_CA_CERTIFICATES_ANNOTATION]
            .len()
            == 64,
        "one managed entry, recorded by digest"
    );

    // Without multi-root, a root change needs a restart (and caCertificates is inert).
    fx.set_multi_root("false").await;
    fx.wait_for(
        "status.istiod.multiRoot=false and the mesh note",
        WAIT,
        || async {
            let s = status_of(&fx.trust().await);
            let mesh_note = s
                .conditions
                .iter()
                .any(|c| c.type_ == "MeshConfig" && c.message.contains("ISTIO_MULTIROOT_MESH"));
            match &s.istiod {
                Some(i) if !i.multi_root && mesh_note => Ok(()),
                other => Err(format!("{other:?} {:?}", s.conditions)),
            }
        },
    )
    .await;
    let root3 = root("third.local root");
    fx.patch_spec(json!({
        "bundle": [entry(TD, &root1), entry(PEER_TD, &root2), entry("third.local", &root3)],
        "bundleGeneration": 3,
    }))
    .await;
    let cc4 = fx.wait_installed(2, 3).await;
    assert_valid_cacerts(&cc4);
    let restarted2 = fx
        .wait_for("a second restart", WAIT, || async {
            match fx.restarted_at().await {
                Some(r) if r != restarted1 => Ok(r),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert!(!restarted2.is_empty());
    let st = wait_ready(&fx).await;
    assert_eq!(st.istiod.as_ref().unwrap().state.to_string(), "restarted");
    assert_eq!(
        fx.mesh().await["caCertificates"]
            .as_sequence()
            .unwrap()
            .len(),
        3
    );

    // Steady state: no writes at all.
    let steady_from = fx.started.elapsed();
    fx.assert_steady(Duration::from_secs(15)).await;
    eprintln!(
        "timings: testbed+setup {setup:?}, first install at {first_install:?}, steady window from {steady_from:?}, total {:?}",
        fx.started.elapsed()
    );
}

#[tokio::test]
async fn repairs_hand_edits_and_refuses_bad_chains() {
    let mut fx = Fixture::new(true).await;
    fx.start_agent();
    let root1 = root("cluster.local root");
    fx.create_trust(vec![entry(TD, &root1)], 1).await;
    let csr1 = fx.wait_csr(1).await;
    fx.patch_spec(json!({ "signed": sign(&root1, &csr1, 1, TD) }))
        .await;
    let good = fx.wait_installed(1, 1).await;
    assert_valid_cacerts(&good);
    let st = wait_ready(&fx).await;
    assert_eq!(st.istiod.unwrap().state.to_string(), "absent");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "MeshConfig" && c.status == "True" && c.reason == "NoMeshConfig")
    );

    // Hand edits of cacerts are repaired.
    let repaired = |what: &'static str| {
        let good = good.clone();
        let fx = &fx;
        async move {
            fx.wait_for(what, WAIT, || async {
                match fx.cacerts().await {
                    Some(c) if c == good => Ok(()),
                    other => Err(format!(
                        "keys {:?}",
                        other.map(|c| c.into_keys().collect::<Vec<_>>())
                    )),
                }
            })
            .await
        }
    };
    fx.edit_cacerts(|d| {
        d.insert("ca-cert.pem".into(), ByteString(b"garbage".to_vec()));
    })
    .await;
    repaired("garbage in ca-cert.pem to be repaired").await;
    fx.edit_cacerts(|d| {
        d.insert(cacerts::ISTIO_GENERATED.into(), ByteString(Vec::new()));
    })
    .await;
    repaired("the istio-generated key to be removed").await;
    fx.istio_secrets()
        .delete(names::CACERTS_SECRET, &Default::default())
        .await
        .unwrap();
    repaired("a deleted cacerts to be recreated").await;

    // A chain for another trust domain is refused; the installed material stays.
    fx.patch_spec(json!({ "csrGeneration": 2 })).await;
    let csr2 = fx.wait_csr(2).await;
    fx.patch_spec(json!({ "signed": sign_for_other_domain(&root1, &csr2, 2, "evil.example") }))
        .await;
    let refused = |needle: &'static str| {
        let fx = &fx;
        async move {
            fx.wait_for(
                &format!("a problem mentioning {needle:?}"),
                WAIT,
                || async {
                    let s = status_of(&fx.trust().await);
                    if s.problems
                        .iter()
                        .any(|p| p.contains("not acceptable") && p.contains(needle))
                        && !condition::is_true(&s.conditions, "Ready")
                    {
                        Ok(s)
                    } else {
                        Err(format!("{:?}", s.problems))
                    }
                },
            )
            .await
        }
    };
    let st = refused("trust domain").await;
    assert_eq!(st.installed.unwrap().csr_generation, 1);
    assert_eq!(fx.cacerts().await.unwrap(), good, "the old material stays");
    assert_eq!(
        fx.agent_secret().await["installed-generation"],
        b"1".to_vec()
    );

    // A chain that does not carry the pending key is refused too.
    let other_key_csr = {
        let (_, csr) = federator_core::csr::generate_cluster_csr(
            &federator_core::identity::ClusterName::new(CLUSTER).unwrap(),
            &TrustDomain::new(TD).unwrap(),
            federator_core::key::KeyAlgorithm::EcdsaP256,
        )
        .unwrap();
        csr
    };
    let mut wrong_key = sign(&root1, &other_key_csr, 2, TD);
    wrong_key.csr_digest = status_of(&fx.trust().await).csr.unwrap().digest;
    fx.patch_spec(json!({ "signed": wrong_key })).await;
    refused("public key").await;
    assert_eq!(fx.cacerts().await.unwrap(), good);

    // A chain from a root that is not this trust domain's is refused.
    let stranger = root("stranger root");
    fx.patch_spec(json!({ "signed": sign(&stranger, &csr2, 2, TD) }))
        .await;
    refused("does not lead to a root").await;
    assert_eq!(fx.cacerts().await.unwrap(), good);

    // The right answer is installed and the problems clear.
    fx.patch_spec(json!({ "signed": sign(&root1, &csr2, 2, TD) }))
        .await;
    let cc2 = fx.wait_installed(2, 1).await;
    assert_valid_cacerts(&cc2);
    assert_ne!(cc2["ca-key.pem"], good["ca-key.pem"]);
    let st = wait_ready(&fx).await;
    assert!(st.problems.is_empty(), "{:?}", st.problems);

    // The agent's identity reads Secrets only in its two namespaces.
    let agent = fx.cluster.client_for_token(&fx.agent_token).await.unwrap();
    let can_named = |verb: &'static str,
                     resource: &'static str,
                     ns: Option<&'static str>,
                     name: Option<&'static str>| {
        let agent = agent.clone();
        async move {
            let attributes = ResourceAttributes {
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                namespace: ns.map(Into::into),
                name: name.map(Into::into),
                ..Default::default()
            };
            federator_api::plumbing::access_allowed(&agent, attributes)
                .await
                .unwrap()
        }
    };
    let can = |verb, resource, ns| can_named(verb, resource, ns, None);
    for ns in ["kube-system", "default", "some-app"] {
        assert!(
            !can("get", "secrets", Some(ns)).await,
            "get secrets in {ns}"
        );
        assert!(
            !can("list", "secrets", Some(ns)).await,
            "list secrets in {ns}"
        );
    }
    assert!(
        !can("list", "secrets", None).await,
        "list secrets cluster-wide"
    );
    assert!(
        !can("watch", "secrets", None).await,
        "watch secrets cluster-wide"
    );
    assert!(
        !can("list", "configmaps", None).await,
        "list configmaps cluster-wide"
    );
    // Only its own objects, by name: its key Secret and cacerts, not istiod's own CA Secret.
    assert!(
        can_named(
            "get",
            "secrets",
            Some(names::NAMESPACE),
            Some(names::AGENT_KEY_SECRET)
        )
        .await
    );
    assert!(
        can_named(
            "update",
            "secrets",
            Some(names::ISTIO_NAMESPACE),
            Some(names::CACERTS_SECRET)
        )
        .await
    );
    assert!(
        !can_named(
            "get",
            "secrets",
            Some(names::ISTIO_NAMESPACE),
            Some("istio-ca-secret")
        )
        .await
    );
    assert!(
        !can("list", "secrets", Some(names::ISTIO_NAMESPACE)).await,
        "list all secrets in istio-system"
    );
    assert!(
        !can("get", "secrets", Some(names::NAMESPACE)).await,
        "any secret in federator-system"
    );
    assert!(
        !can("update", "clustertrusts", Some(names::NAMESPACE)).await,
        "the spec is the hub's"
    );
}

/// A background hub: signs every CSR the agent publishes for the current generation.
fn spawn_hub(
    trusts: Api<ClusterTrust>,
    root: std::sync::Arc<federator_core::ca::IssuingCa>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(t) = trusts.get(names::CLUSTER_TRUST).await
                && let Some(csr) = t.status.as_ref().and_then(|s| s.csr.clone())
                && csr.generation == t.spec.csr_generation
                && t.spec.signed.as_ref().map(|s| s.csr_digest.as_str())
                    != Some(csr.digest.as_str())
            {
                let signed = sign(&root, &csr.pem, csr.generation, TD);
                let _ = trusts
                    .patch(
                        names::CLUSTER_TRUST,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "spec": { "signed": signed } })),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test]
async fn converges_after_sigkill_and_waits_for_istio_system() {
    // istio-system does not exist yet: the agent reports it and retries.
    let mut fx = Fixture::new(false).await;
    fx.start_agent();
    let root1 = std::sync::Arc::new(root("cluster.local root"));
    let root2 = root("west.local root");
    fx.create_trust(vec![entry(TD, &root1)], 1).await;
    let hub = spawn_hub(fx.trusts(), root1.clone());
    fx.wait_for("a problem about istio-system", WAIT, || async {
        let s = status_of(&fx.trust().await);
        if s.problems.iter().any(|p| p.contains("istio-system")) && s.installed.is_none() {
            Ok(())
        } else {
            Err(format!("{:?}", s.problems))
        }
    })
    .await;
    fx.create_istio_namespace().await;
    fx.reinstall_rbac().await;
    fx.create_istiod(None).await;
    fx.wait_installed(1, 1).await;
    let first_restart = fx
        .wait_for("the first-install restart", WAIT, || async {
            fx.restarted_at().await.ok_or_else(|| "none".to_owned())
        })
        .await;

    // SIGKILL the agent at many points while the hub renews and the bundle changes.
    let delays_ms = [0u64, 30, 60, 100, 150, 200, 300, 450, 600, 800, 1100, 1500];
    for (i, delay) in delays_ms.iter().enumerate() {
        let t = fx.trust().await;
        if i % 3 == 0 {
            fx.patch_spec(json!({ "csrGeneration": t.spec.csr_generation + 1 }))
                .await;
        }
        if i % 4 == 1 {
            let with_peer = t.spec.bundle.len() == 1;
            let bundle = if with_peer {
                vec![entry(TD, &root1), entry(PEER_TD, &root2)]
            } else {
                vec![entry(TD, &root1)]
            };
            fx.patch_spec(
                json!({ "bundle": bundle, "bundleGeneration": t.spec.bundle_generation + 1 }),
            )
            .await;
        }
        fx.kill_agent();
        fx.start_agent();
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        fx.kill_agent();
    }

    // Converges: exactly the current generation installed, valid, a projection of the
    // agent Secret, no restart left half-done.
    fx.start_agent();
    let spec = fx.trust().await.spec;
    let cc = fx
        .wait_installed(spec.csr_generation, spec.bundle_generation)
        .await;
    assert_valid_cacerts(&cc);
    let st = wait_ready(&fx).await;
    let own = fx.agent_secret().await;
    assert_eq!(own["installed-key.pem"], cc["ca-key.pem"]);
    assert_eq!(own["pending-key.pem"], own["installed-key.pem"]);
    assert_eq!(
        own["pending-csr.pem"],
        st.csr.as_ref().unwrap().pem.clone().into_bytes(),
        "status.csr is the agent Secret's pending CSR"
    );
    assert_eq!(own["installed-chain.pem"], cc["cert-chain.pem"]);
    let anns = fx
        .istio_secrets()
        .get(names::CACERTS_SECRET)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !anns.contains_key("federator.io/istiod-restart-pending"),
        "{anns:?}"
    );
    assert!(fx.restarted_at().await.is_some());
    let _ = first_restart;

    // Deterministic crash points, with the agent stopped and the state left as a crash
    // between two writes would leave it.
    hub.abort();
    fx.kill_agent();
    // (a) The CSR was stored but never published: republished as is, no fresh key.
    fx.trusts()
        .patch_status(
            names::CLUSTER_TRUST,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "csr": null } })),
        )
        .await
        .unwrap();
    // (b) The chain was promoted but cacerts not written: cacerts holds something older.
    let mut stale = fx.istio_secrets().get(names::CACERTS_SECRET).await.unwrap();
    stale
        .data
        .as_mut()
        .unwrap()
        .insert("ca-cert.pem".into(), ByteString(b"stale".to_vec()));
    // (c) cacerts was written with a restart decision, the Deployment not yet patched.
    stale
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            "federator.io/istiod-restart-pending".into(),
            "2030-01-01T00:00:00Z".into(),
        );
    stale.metadata.managed_fields = None;
    fx.istio_secrets()
        .replace(names::CACERTS_SECRET, &PostParams::default(), &stale)
        .await
        .unwrap();
    let before = fx.agent_secret().await;
    fx.start_agent();
    fx.wait_for("recovery from every crash point", WAIT, || async {
        let s = status_of(&fx.trust().await);
        let secret = fx.istio_secrets().get(names::CACERTS_SECRET).await.unwrap();
        let marker = secret
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .contains_key("federator.io/istiod-restart-pending");
        let restarted = fx.restarted_at().await;
        if s.csr.as_ref().map(|c| c.pem.as_bytes()) == Some(before["pending-csr.pem"].as_slice())
            && data(&secret) == cc
            && !marker
            && restarted.as_deref() == Some("2030-01-01T00:00:00Z")
        {
            Ok(())
        } else {
            Err(format!(
                "csr {:?}, marker {marker}, restartedAt {restarted:?}",
                s.csr.map(|c| c.generation)
            ))
        }
    })
    .await;
    assert_eq!(
        fx.agent_secret().await,
        before,
        "no fresh key, nothing re-promoted"
    );
    wait_ready(&fx).await;
    fx.assert_steady(Duration::from_secs(5)).await;
}
