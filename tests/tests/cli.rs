//! CLI conveniences against the testbed: `join --server` (the address the hub and the other
//! members reach a member at) and `status --watch`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use federator_api::names;
use federator_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The `server` of the kubeconfig stored in hub Secret `name`.
async fn stored_server(fed: &Federation, name: &str) -> Option<String> {
    let secrets: Api<Secret> = Api::namespaced(fed.hub.client().await.ok()?, names::NAMESPACE);
    let secret = secrets.get_opt(name).await.ok()??;
    let yaml = String::from_utf8(secret.data?.get(names::KUBECONFIG_KEY)?.0.clone()).ok()?;
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).ok()?;
    kc.clusters.first()?.cluster.as_ref()?.server.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_server_is_where_the_hub_and_the_peers_reach_the_member() {
    let mut fed = Federation::start(&[("c1", "cluster.local"), ("c2", "cluster.local")], &[]).await;
    let c1 = &fed.members["c1"].cluster;
    // The same API server under another name (its certificate names localhost too); the admin
    // kubeconfig says https://127.0.0.1:PORT.
    let alias = format!("https://localhost:{}", c1.port());
    assert_ne!(c1.server(), alias);
    let kubeconfig = c1.kubeconfig_path().to_str().unwrap().to_owned();
    let base = ["join", "cluster", "c1", "--kubeconfig", &kubeconfig];

    // A bad URL is refused with what to pass, and nothing is registered.
    let mut bad = base.to_vec();
    bad.extend(["--server", "http://localhost:1"]);
    let out = fed.federator(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must start with https://"), "{err}");
    assert!(fed.member_cluster("c1").await.is_none());

    let agent_out = fed.members["c1"]
        .agent_kubeconfig
        .to_str()
        .unwrap()
        .to_owned();
    let mut args = base.to_vec();
    args.extend([
        "--server",
        &alias,
        "--agent-mode",
        "external",
        "--agent-kubeconfig-out",
        &agent_out,
    ]);
    let out = fed.federator_ok(&args);
    assert!(out.contains(&alias), "{out}");
    assert_eq!(
        stored_server(&fed, &names::member_credential_secret("c1"))
            .await
            .as_deref(),
        Some(alias.as_str()),
        "the hub's credential names --server"
    );
    assert_eq!(fed.member_cluster("c1").await.unwrap().spec.server, alias);
    // Joining again with the same address keeps the credential (checked through the admin
    // kubeconfig's address).
    let again = fed.federator_ok(&args);
    assert!(!again.contains("stored a new"), "{again}");

    // serve reaches c1 there, and the reader kubeconfig the other members' istiods get names
    // it too.
    fed.join("c2");
    fed.start_serve(&[]);
    // c1's agent logs JSON and serves its metrics and probes.
    let port = testbed::process::pick_port().unwrap();
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut args = federator_testkit::agent_args(&fed.members["c1"].agent_kubeconfig, "c1", "info");
    args.extend([
        "--log-format".to_owned(),
        "json".to_owned(),
        "--metrics-addr".to_owned(),
        metrics_addr.to_string(),
    ]);
    let agent = testbed::Process::spawn(
        testbed::ProcessSpec::new(
            "c1-agent",
            bin("cluster-agent"),
            fed.dir.join("c1-agent.log"),
        )
        .args(args),
    )
    .unwrap();
    fed.start_agent("c2");
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(90))
        .await;
    let reader_secret = names::reader_credential_secret("c1");
    let reader = wait_for("c1's reader kubeconfig", Duration::from_secs(30), || {
        stored_server(&fed, &reader_secret)
    })
    .await;
    assert_eq!(reader, alias);

    // The agent's endpoints: ready, and metrics that agree with what it installed.
    let metrics_addr = metrics_addr.to_string();
    let get = |path| testbed::http::get(&metrics_addr, path, None);
    assert_eq!(get("/readyz").await.unwrap().status, 200);
    assert_eq!(get("/healthz").await.unwrap().status, 200);
    let trust = fed.cluster_trust("c1").await.unwrap();
    let installed = trust.status.unwrap().installed.unwrap();
    let metrics = wait_for(
        "the agent's metrics to show c1's peer",
        Duration::from_secs(30),
        || async {
            let m = get("/metrics").await.ok()?.body;
            m.contains("federator_agent_remote_secrets 1\n")
                .then_some(m)
        },
    )
    .await;
    assert!(
        metrics.contains(&format!(
            "federator_agent_ca_expiry_timestamp_seconds {}\n",
            installed.not_after.0.as_second()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("federator_agent_build_info{version="),
        "{metrics}"
    );
    assert!(
        metrics.contains("federator_agent_cacerts_writes_total "),
        "{metrics}"
    );
    assert!(
        metrics.contains("federator_agent_reconcile_errors_total "),
        "{metrics}"
    );
    assert!(
        metrics.contains("federator_agent_bundle_generation "),
        "{metrics}"
    );
    // Every log line is a JSON object with a level and the message in its fields.
    let log = std::fs::read_to_string(agent.log_path()).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "cluster-agent watching"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_renders_again_when_a_member_changes() {
    let fed = Federation::start(&[("c1", "cluster.local"), ("c2", "cluster.local")], &[]).await;
    fed.join("c1");
    let mut watch = tokio::process::Command::new(bin("federator"))
        .args(["status", "--watch", "-o", "json"])
        .env("FEDERATOR_HUB_KUBECONFIG", fed.hub.kubeconfig_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // One JSON document per rendering; each ends with a `}` line.
    let mut documents: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut next_document = async || -> serde_json::Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("a rendering within 60s")
                .unwrap()
                .expect("status --watch keeps running");
            current += &line;
            current += "\n";
            if line == "}" {
                documents.push(std::mem::take(&mut current));
                return serde_json::from_str(documents.last().unwrap()).unwrap();
            }
        }
    };
    let names_in = |doc: &serde_json::Value| -> Vec<String> {
        doc["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = next_document().await;
    assert_eq!(names_in(&first), ["c1"]);
    // A change: another member joins; the watch renders it without being asked.
    fed.join("c2");
    let second = loop {
        let doc = next_document().await;
        if names_in(&doc).len() == 2 {
            break doc;
        }
    };
    assert_eq!(names_in(&second), ["c1", "c2"]);
    assert!(
        watch.try_wait().unwrap().is_none(),
        "still watching after two renderings"
    );
    watch.kill().await.unwrap();
}
