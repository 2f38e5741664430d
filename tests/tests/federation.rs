//! A hub and three members (two sharing `cluster.local`, one in its own trust domain), hub and
//! agents as processes: every member gets valid `cacerts`, workloads of any member are trusted
//! everywhere, and after `leave` the departed cluster is trusted nowhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_api::names;
use federator_core::cacerts;
use federator_e2e::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

const MEMBERS: [(&str, &str); 3] = [
    ("c1", "cluster.local"),
    ("c2", "cluster.local"),
    ("c3", "c3.example"),
];

fn leaf_id(td: &str) -> String {
    format!("spiffe://{td}/ns/default/sa/web")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_trust_each_other_until_one_leaves() {
    let mut fed = Federation::start(&MEMBERS, &["--org", "Example Corp"]).await;
    for (name, _) in MEMBERS {
        fed.join(name);
        fed.install_mesh_config(name).await;
    }
    let metrics_port = testbed::process::pick_port().unwrap();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    fed.start_serve(&["--metrics-addr", &metrics_addr]);
    for (name, _) in MEMBERS {
        fed.start_agent(name);
    }
    fed.wait_healthy(&["c1", "c2", "c3"], Duration::from_secs(90))
        .await;

    // The hub's metrics.
    let metrics = wait_for(
        "metrics to show every member ready",
        Duration::from_secs(30),
        || async {
            let r = testbed::http::get(&metrics_addr, "/metrics", None)
                .await
                .ok()?;
            let ready = MEMBERS.iter().all(|(n, _)| {
                r.body
                    .contains(&format!("federator_member_ready{{cluster=\"{n}\"}} 1"))
            });
            ready.then_some(r.body)
        },
    )
    .await;
    assert!(metrics.contains("federator_members 3\n"), "{metrics}");
    assert!(metrics.contains("federator_leader 1\n"));
    assert!(
        metrics.contains("federator_signed_total{cluster=\"c1\"} 1\n"),
        "{metrics}"
    );

    // Every member's cacerts passes the core validator and openssl's strict verification.
    let tmp = tempfile::tempdir().unwrap();
    let mut files = std::collections::BTreeMap::new();
    for (name, _) in MEMBERS {
        let f = fed.cacerts(name).await.unwrap();
        let report = cacerts::inspect(&f, time::OffsetDateTime::now_utc());
        assert!(report.is_ok(), "{name}: {:?}", report.problems);
        let dir = tmp.path().join(name);
        write_dir(&dir, &f);
        assert!(
            openssl_verify(&dir.join("ca-cert.pem"), &dir.join("root-cert.pem"), None),
            "openssl verify of {name}"
        );
        files.insert(name, f);
    }
    // Clusters sharing a trust domain share a root; c3 has its own.
    let root_of = |n: &str| String::from_utf8(files[n]["root-cert.pem"].clone()).unwrap();
    assert_eq!(root_of("c1"), root_of("c2"));
    assert_eq!(
        root_of("c1"),
        root_of("c3"),
        "every member gets the same bundle"
    );
    assert_eq!(
        federator_core::cert::parse_pem_certificates(root_of("c1").as_bytes(), "b")
            .unwrap()
            .len(),
        2
    );

    // A workload leaf of any member verifies against every other member's root-cert.pem.
    for (from, td) in MEMBERS {
        let leaf = mint_leaf(&files[from], &leaf_id(td));
        for (to, _) in MEMBERS {
            verifies(&leaf, &files[to]).unwrap_or_else(|e| panic!("leaf of {from} at {to}: {e}"));
        }
        // And with openssl, as an independent oracle.
        let dir = tmp.path().join(format!("leaf-{from}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("leaf.pem"),
            federator_core::cert::to_pem([leaf[0].as_slice()]),
        )
        .unwrap();
        for (to, _) in MEMBERS {
            assert!(openssl_verify(
                &dir.join("leaf.pem"),
                &tmp.path().join(to).join("root-cert.pem"),
                Some(&tmp.path().join(from).join("cert-chain.pem"))
            ));
        }
    }

    // Roots made later (for c3's trust domain) follow init's settings too.
    let out = fed.federator_ok(&["status", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    for root in status["roots"].as_array().unwrap() {
        assert!(
            root["subject"]
                .as_str()
                .unwrap()
                .starts_with("O=Example Corp,"),
            "{root}"
        );
    }
    assert_eq!(status["roots"].as_array().unwrap().len(), 2);

    // `federator bundle` prints exactly what members install, and SPIFFE bundles per domain.
    assert_eq!(fed.federator_ok(&["bundle"]), root_of("c1"));
    let spiffe: serde_json::Value =
        serde_json::from_str(&fed.federator_ok(&["bundle", "--format", "spiffe"])).unwrap();
    for td in ["cluster.local", "c3.example"] {
        assert_eq!(spiffe[td]["keys"][0]["use"], "x509-svid", "{spiffe}");
    }

    // Peers in other trust domains are in the mesh config with their trust domain.
    let c1 = fed.members["c1"].cluster.client().await.unwrap();
    let mesh = Api::<ConfigMap>::namespaced(c1, names::ISTIO_NAMESPACE)
        .get(names::ISTIO_CONFIGMAP)
        .await
        .unwrap();
    let mesh: serde_yaml::Value =
        serde_yaml::from_str(&mesh.data.unwrap()[names::MESH_KEY]).unwrap();
    let entries = mesh["caCertificates"]
        .as_sequence()
        .expect("caCertificates");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["trustDomains"][0].as_str(), Some("c3.example"));

    // c3 leaves: its trust domain's root leaves every remaining member's bundle.
    let c3_leaf = mint_leaf(&files["c3"], &leaf_id("c3.example"));
    fed.federator_ok(&["leave", "cluster", "c3"]);
    for name in ["c1", "c2"] {
        wait_for(
            &format!("{name} to drop c3's root"),
            Duration::from_secs(60),
            || async {
                let f = fed.cacerts(name).await?;
                verifies(&c3_leaf, &f).is_err().then_some(())
            },
        )
        .await;
    }
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(60))
        .await;
    let c1 = fed.cacerts("c1").await.unwrap();
    let c2 = fed.cacerts("c2").await.unwrap();
    verifies(&mint_leaf(&c1, &leaf_id("cluster.local")), &c2).unwrap();
    verifies(&mint_leaf(&c2, &leaf_id("cluster.local")), &c1).unwrap();
    let status = fed.federator_ok(&["status", "-o", "json"]);
    assert!(
        !status.contains("\"c3\""),
        "c3 is gone from status: {status}"
    );
    // The hub's credential for c3 is revoked and deleted.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    assert!(
        secrets
            .get_opt(&names::member_credential_secret("c3"))
            .await
            .unwrap()
            .is_none()
    );
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(
        fed.members["c3"].cluster.client().await.unwrap(),
        names::NAMESPACE,
    );
    assert!(
        sas.get_opt(names::HUB_SERVICE_ACCOUNT)
            .await
            .unwrap()
            .is_none()
    );
}
