//! The hub installed the way an operator installs it, on real nodes: `helm install` of
//! `examples/helm/federator` into a hub cluster with a node (two `federator serve` replicas
//! with leader election, the chart's `init` Job), then three `federator join`s of node
//! clusters whose agents run as Pods. Then the leader Pod is deleted in the middle of a
//! renewal: the other replica takes the Lease within the lease duration, the renewal
//! completes, trust never breaks (checked all along), and the replacement Pod is a standby.
//!
//! Needs `tools/build.sh istiod nodes ops` (kubelet etc. and helm) and the Debian packages
//! `.ci/run` installs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use federator_api::names;
use federator_core::cacerts;
use federator_e2e::examples::{chart, output, tool};
use federator_e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use testbed::Binaries;

const MEMBERS: [(&str, &str); 3] = [
    ("cluster-1", "cluster.local"),
    ("cluster-2", "cluster.local"),
    ("cluster-3", "east.example"),
];
/// The chart's release name, and so the hub Deployment's name.
const RELEASE: &str = "federator";
/// The Pods of the hub Deployment.
const HUB_PODS: &str = "app.kubernetes.io/name=federator,app.kubernetes.io/component=hub";
/// The lease duration `serve --leader-elect` uses.
const LEASE_DURATION: Duration = Duration::from_secs(15);

fn figure(what: &str, value: impl std::fmt::Display) {
    eprintln!("[figure] {what}: {value}");
}

/// Runs the real `helm` against the hub cluster; on failure, panics with the logs of every
/// Pod in the hub's namespace (the init Job's, the replicas').
async fn helm(fed: &Federation, args: &[&str]) -> String {
    let out = output(
        tool(Binaries::helm)
            .args(args)
            .arg("--kubeconfig")
            .arg(fed.hub.kubeconfig_path()),
    );
    if !out.status.success() {
        panic!(
            "helm {args:?} failed ({}): {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            hub_logs(fed).await
        );
    }
    String::from_utf8(out.stdout).unwrap()
}

/// The logs of every container of every Pod in the hub's namespace.
async fn hub_logs(fed: &Federation) -> String {
    let api: Api<Pod> = Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    let node = fed.testbed.node(fed.hub.name()).unwrap();
    let mut out = String::new();
    for p in api.list(&ListParams::default()).await.unwrap().items {
        let name = p.metadata.name.clone().unwrap_or_default();
        for c in p.spec.map(|s| s.containers).unwrap_or_default() {
            out.push_str(&format!(
                "--- {name}/{}:\n{}\n",
                c.name,
                node.container_log(names::NAMESPACE, &name, &c.name)
            ));
        }
    }
    let jobs: Api<Job> = Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    for j in jobs.list(&ListParams::default()).await.unwrap().items {
        out.push_str(&format!(
            "--- Job {}: {:?}\n",
            j.metadata.name.unwrap_or_default(),
            j.status
        ));
    }
    let client = fed.hub.client().await.unwrap();
    out.push_str(&format!(
        "--- events:\n{:#?}\n",
        events_in(&client, names::NAMESPACE).await
    ));
    out
}

/// `reason: note` of every Event in a namespace.
async fn events_in(client: &kube::Client, ns: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|e| {
                    format!(
                        "{}/{}: {}: {}",
                        e.involved_object.kind.unwrap_or_default(),
                        e.involved_object.name.unwrap_or_default(),
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Ready, and not on its way out.
fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && pod_is_ready(p)
}

async fn hub_pods(fed: &Federation) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    api.list(&ListParams::default().labels(HUB_PODS))
        .await
        .unwrap()
        .items
}

/// `GET path` on a Pod's port 9090 (the host reaches Pods by IP): status and body.
async fn http_get(pod: &Pod, path: &str) -> (u16, String) {
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let r = testbed::http::get(&format!("{ip}:9090"), path, None)
        .await
        .unwrap();
    (r.status, r.body)
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// What [`TrustCheck`] saw.
#[derive(Default)]
struct TrustSeen {
    rounds: usize,
    failures: Vec<String>,
}

/// Checks all the time, in the background, that every member's `cacerts` is valid and that a
/// workload certificate minted from each member's CA verifies against every other member's
/// `root-cert.pem` (what the members' istiods would use).
struct TrustCheck {
    stop: Arc<AtomicBool>,
    /// Complete rounds so far.
    rounds: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<TrustSeen>,
}

impl TrustCheck {
    fn start(fed: &Federation) -> TrustCheck {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let rounds = Arc::new(AtomicUsize::new(0));
        let counter = rounds.clone();
        let clusters: Vec<(String, String, testbed::Cluster)> = fed
            .members
            .iter()
            .map(|(n, m)| (n.clone(), m.trust_domain.clone(), m.cluster.clone()))
            .collect();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut seen = TrustSeen::default();
            while !flag.load(Ordering::SeqCst) {
                let at = started.elapsed().as_secs_f64();
                let mut files = BTreeMap::new();
                for (name, _, cluster) in &clusters {
                    match cacerts_of(cluster).await {
                        Some(f) => {
                            let report = cacerts::inspect(&f, time::OffsetDateTime::now_utc());
                            if !report.is_ok() {
                                seen.failures
                                    .push(format!("{at:.1}s: {name}: {:?}", report.problems));
                            }
                            files.insert(name.clone(), f);
                        }
                        None => seen.failures.push(format!("{at:.1}s: {name}: no cacerts")),
                    }
                }
                for (a, td, _) in &clusters {
                    let Some(fa) = files.get(a) else { continue };
                    let leaf = mint_leaf(fa, &format!("spiffe://{td}/ns/web/sa/web"));
                    for (b, fb) in &files {
                        if let Err(e) = verifies(&leaf, fb) {
                            seen.failures
                                .push(format!("{at:.1}s: trust gap {a} -> {b}: {e}"));
                        }
                    }
                }
                if files.len() == clusters.len() {
                    seen.rounds += 1;
                    counter.store(seen.rounds, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen
        });
        TrustCheck { stop, rounds, task }
    }

    /// Waits until `n` more complete rounds have run from now.
    async fn more_rounds(&self, n: usize) {
        let from = self.rounds.load(Ordering::SeqCst);
        wait_for(
            &format!("{n} more rounds of trust checks"),
            Duration::from_secs(60),
            || async { (self.rounds.load(Ordering::SeqCst) >= from + n).then_some(()) },
        )
        .await;
    }

    async fn stop(self) -> TrustSeen {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chart_installs_a_hub_that_keeps_trust_when_its_leader_dies_mid_renewal() {
    let fed = Federation::with_nodes("hub", &MEMBERS, None).await;

    // Install: the chart's CRDs, the two replicas, and its init Job (a post-install hook that
    // helm waits for).
    let started = Instant::now();
    let chart = chart();
    helm(
        &fed,
        &[
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            names::NAMESPACE,
            "--create-namespace",
            "--wait",
            "--wait-for-jobs",
            "--timeout",
            "5m",
            "--set",
            "image.pullPolicy=Never",
        ],
    )
    .await;
    figure(
        "helm install --wait (2 replicas, init Job)",
        format!("{:.1?}", started.elapsed()),
    );
    let hub = fed.hub.client().await.unwrap();
    let deploy = Api::<Deployment>::namespaced(hub.clone(), names::NAMESPACE)
        .get(RELEASE)
        .await
        .unwrap();
    assert_eq!(deploy.spec.as_ref().unwrap().replicas, Some(2));
    // The init Job ran (a hook helm waited for) and made the federation.
    let init = Api::<Job>::namespaced(hub.clone(), names::NAMESPACE)
        .get("federator-init")
        .await
        .unwrap();
    assert_eq!(
        init.status.and_then(|s| s.succeeded),
        Some(1),
        "the init Job succeeded"
    );
    assert!(
        fed.federator_ok(&["status", "-o", "json"])
            .contains("\"clusters\""),
        "init made the federation"
    );

    // One replica holds the Lease, the other is a standby; both are ready.
    let pods = wait_for("two ready hub Pods", Duration::from_secs(60), || async {
        let pods: Vec<Pod> = hub_pods(&fed).await.into_iter().filter(is_ready).collect();
        (pods.len() == 2).then_some(pods)
    })
    .await;
    let leader = wait_for("a Lease holder", Duration::from_secs(30), || {
        fed.lease_holder()
    })
    .await;
    let names_of: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert!(
        names_of.contains(&leader),
        "the Lease holder {leader} is one of {names_of:?}"
    );
    for p in &pods {
        let name = p.metadata.name.as_deref().unwrap();
        assert_eq!(http_get(p, "/readyz").await.0, 200, "{name} is ready");
        let (code, body) = http_get(p, "/metrics").await;
        assert_eq!(code, 200);
        let want = if name == leader { 1.0 } else { 0.0 };
        assert_eq!(
            metric(&body, "federator_leader"),
            Some(want),
            "{name}:\n{body}"
        );
    }

    // Three joins, the hub reaching each member through the hub node's address for it.
    let started = Instant::now();
    for (name, _) in MEMBERS {
        let server = fed.members[name].cluster.server_from(&fed.hub).unwrap();
        fed.join_default_with(name, &["--server", &server]);
    }
    let all: Vec<&str> = MEMBERS.iter().map(|(n, _)| *n).collect();
    fed.wait_healthy(&all, Duration::from_secs(180)).await;
    figure(
        "3 joins to a healthy federation",
        format!("{:.1?}", started.elapsed()),
    );

    // A renewal of every member, and the leader Pod deleted right after it was asked for.
    let trust = TrustCheck::start(&fed);
    trust.more_rounds(1).await;
    let mut before = BTreeMap::new();
    for name in &all {
        before.insert(*name, fed.cluster_ca(name).await);
    }
    for name in &all {
        fed.bump_csr_generation(name).await;
    }
    let pods_api: Api<Pod> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let deleted = Instant::now();
    pods_api
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let new_leader = wait_for(
        "the other replica to take the Lease",
        LEASE_DURATION,
        || async { fed.lease_holder().await.filter(|h| *h != leader) },
    )
    .await;
    let takeover = deleted.elapsed();
    figure(
        "leader Pod deleted -> the other replica holds the Lease",
        format!("{takeover:.2?}"),
    );
    assert!(
        names_of.contains(&new_leader),
        "{new_leader} is the former standby"
    );
    // Failed once under full-suite load (a member not renewed within 60 s): on a timeout, the
    // member's ClusterTrust and the hub Pods' logs say where it stopped.
    for name in &all {
        let deadline = Instant::now() + Duration::from_secs(60);
        while fed.cluster_ca(name).await == before[name] {
            if Instant::now() > deadline {
                panic!(
                    "{name} not renewed 60 s after the leader Pod was deleted (new leader {new_leader})\n--- its ClusterTrust:\n{:#?}\n{}",
                    fed.cluster_trust(name).await,
                    hub_logs(&fed).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    figure(
        "leader Pod deleted -> every member renewed",
        format!("{:.1?}", deleted.elapsed()),
    );

    // The replacement Pod becomes a ready standby, and the Lease stays where it is.
    let replacement = wait_for(
        "the deleted Pod's replacement to be ready",
        Duration::from_secs(90),
        || async {
            hub_pods(&fed)
                .await
                .into_iter()
                .find(|p| is_ready(p) && !names_of.contains(p.metadata.name.as_ref().unwrap()))
        },
    )
    .await;
    let (_, body) = http_get(&replacement, "/metrics").await;
    assert_eq!(metric(&body, "federator_leader"), Some(0.0), "{body}");
    assert_eq!(
        fed.lease_holder().await.as_deref(),
        Some(new_leader.as_str())
    );
    fed.wait_healthy(&all, Duration::from_secs(60)).await;

    // Checked before, all along, and on the renewed CAs after.
    trust.more_rounds(3).await;
    let seen = trust.stop().await;
    figure("trust checks around the renewal", seen.rounds);
    assert!(seen.failures.is_empty(), "trust gaps: {:#?}", seen.failures);
}
