//! Two hub replicas with leader election: only the Lease holder acts, and when it is killed the
//! other takes over. A leader that gets SIGTERM releases the Lease and the standby takes it at
//! once. The hub also renews its own token for a member before it expires.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use federator_api::names;
use federator_e2e::*;
use federator_testkit::wait_until;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use testbed::Process;

/// A replica with the tests' 3 s heartbeat.
fn replica_with(fed: &Federation, id: &str, extra: &[&str]) -> Process {
    fed.serve_replica(id, &[&["--heartbeat", "3s"], extra].concat())
}

fn replica(fed: &Federation, id: &str) -> Process {
    replica_with(fed, id, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_acts_and_a_follower_takes_over() {
    let mut fed = Federation::start(&[("c1", "cluster.local"), ("c2", "cluster.local")], &[]).await;
    fed.join("c1");
    let mut a = replica(&fed, "replica-a");
    let mut b = replica(&fed, "replica-b");
    fed.start_agent("c1");
    fed.wait_healthy(&["c1"], Duration::from_secs(60)).await;

    let leader = wait_for("a Lease holder", Duration::from_secs(30), || {
        fed.lease_holder()
    })
    .await;
    let (leader_proc, follower_proc, follower) = if leader == "replica-a" {
        (&mut a, &mut b, "replica-b")
    } else {
        (&mut b, &mut a, "replica-a")
    };
    assert!(
        follower_proc
            .log_tail(50)
            .contains("waiting for leadership")
    );
    assert!(
        !follower_proc.log_tail(200).contains("signed a cluster CA"),
        "only the leader signs"
    );

    // The hub renews its token for c1 when two thirds of its lifetime have passed: pretend it
    // was issued long ago.
    let secrets: Api<Secret> = Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    let cred = names::member_credential_secret("c1");
    let before = secrets.get(&cred).await.unwrap().data.unwrap()[names::KUBECONFIG_KEY].clone();
    let patch = serde_json::json!({ "metadata": { "annotations": { "federator.io/token-issued": "2000-01-01T00:00:00Z" } } });
    secrets
        .patch(&cred, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        "the hub to renew its token for c1",
        Duration::from_secs(30),
        || async {
            let s = secrets.get(&cred).await.ok()?;
            (s.data?[names::KUBECONFIG_KEY] != before).then_some(())
        },
    )
    .await;
    let renewed = wait_for(
        "the issue time to be recorded",
        Duration::from_secs(10),
        || async {
            let s = secrets.get(&cred).await.ok()?;
            let issued = s
                .metadata
                .annotations
                .clone()?
                .get("federator.io/token-issued")?
                .clone();
            (issued != "2000-01-01T00:00:00Z").then_some(s)
        },
    )
    .await;
    let yaml = String::from_utf8(renewed.data.unwrap()[names::KUBECONFIG_KEY].0.clone()).unwrap();
    let client = testbed::cluster::client_from_yaml(&yaml).await.unwrap();
    let trusts: Api<federator_api::member::ClusterTrust> =
        Api::namespaced(client, names::NAMESPACE);
    trusts
        .get(names::CLUSTER_TRUST)
        .await
        .expect("the renewed token works");

    // Kill the leader: the follower takes the Lease and serves a new member.
    leader_proc.kill();
    wait_for(
        "the follower to take the Lease",
        Duration::from_secs(45),
        || async { (fed.lease_holder().await.as_deref() == Some(follower)).then_some(()) },
    )
    .await;
    fed.join("c2");
    fed.start_agent("c2");
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(60))
        .await;
    assert!(follower_proc.log_tail(400).contains("became the leader"));
}

/// `GET path` on a replica's `--metrics-addr`: (status code, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let r = testbed::http::get(&addr.to_string(), path, None)
        .await
        .ok()?;
    Some((r.status, r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_the_standby_takes_over_at_once() {
    let mut fed = Federation::start(&[("c1", "cluster.local")], &[]).await;
    fed.join("c1");
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ports = [
        testbed::process::pick_port().unwrap(),
        testbed::process::pick_port().unwrap(),
    ];
    let metrics_flag = |i: usize| addr(ports[i]).to_string();
    let (flag_a, flag_b) = (metrics_flag(0), metrics_flag(1));
    let mut a = replica_with(&fed, "replica-a", &["--metrics-addr", &flag_a]);
    // replica-b logs JSON lines (`--log-format` is a global flag).
    let mut b = replica_with(
        &fed,
        "replica-b",
        &["--metrics-addr", &flag_b, "--log-format", "json"],
    );
    fed.start_agent("c1");
    fed.wait_healthy(&["c1"], Duration::from_secs(60)).await;
    let leader = wait_for("a Lease holder", Duration::from_secs(30), || {
        fed.lease_holder()
    })
    .await;
    let (leader_proc, leader_addr, follower_proc, follower_addr, follower) =
        if leader == "replica-a" {
            (&mut a, addr(ports[0]), &mut b, addr(ports[1]), "replica-b")
        } else {
            (&mut b, addr(ports[1]), &mut a, addr(ports[0]), "replica-a")
        };

    // Both are ready: the leader with its caches synced, the standby once it read the Lease.
    for (who, at) in [("leader", leader_addr), ("standby", follower_addr)] {
        wait_for(
            &format!("the {who} to be ready"),
            Duration::from_secs(30),
            || async { (get(at, "/readyz").await?.0 == 200).then_some(()) },
        )
        .await;
        assert_eq!(get(at, "/healthz").await.unwrap().0, 200, "{who}");
    }
    let metrics = |at| async move { get(at, "/metrics").await.unwrap().1 };
    assert!(metrics(leader_addr).await.contains("federator_leader 1\n"));
    assert!(
        metrics(follower_addr)
            .await
            .contains("federator_leader 0\n")
    );

    // SIGTERM: the leader stops its controllers and releases the Lease, far sooner than the
    // lease duration (15 s) a vanished holder would keep it.
    let lease_duration = Duration::from_secs(15);
    let start = Instant::now();
    let (_, released_after) = tokio::join!(leader_proc.terminate(Duration::from_secs(10)), async {
        wait_for(
            "the Lease to leave the terminated leader",
            Duration::from_secs(10),
            || async {
                (fed.lease_holder().await.as_deref() != Some(leader.as_str())).then_some(())
            },
        )
        .await;
        start.elapsed()
    });
    eprintln!("Lease left the terminated leader after {released_after:.2?}");
    assert!(
        released_after < Duration::from_secs(3),
        "released after {released_after:?}"
    );
    let status = leader_proc.exit_status().expect("the leader exited");
    assert!(
        status.success(),
        "exit status {status}: {}",
        leader_proc.log_tail(30)
    );
    assert!(
        leader_proc.log_tail(30).contains("released the Lease"),
        "{}",
        leader_proc.log_tail(30)
    );

    // The standby takes it at once, not after the lease duration.
    wait_for(
        "the standby to take the released Lease",
        Duration::from_secs(10),
        || async { (fed.lease_holder().await.as_deref() == Some(follower)).then_some(()) },
    )
    .await;
    let took_over = start.elapsed();
    eprintln!("the standby held the Lease {took_over:.2?} after SIGTERM");
    assert!(
        took_over < lease_duration / 2,
        "took over after {took_over:?}: {}",
        follower_proc.log_tail(30)
    );
    assert!(
        follower_proc
            .log_tail(100)
            .contains("released the Lease; taking it")
    );
    let follower_log = &*follower_proc;
    wait_until(
        "the new leader to be ready and say so",
        Duration::from_secs(30),
        || async {
            let (code, body) = get(follower_addr, "/readyz")
                .await
                .ok_or("no answer on /readyz")?;
            let leading = metrics(follower_addr)
                .await
                .contains("federator_leader 1\n");
            if code == 200 && leading {
                Ok(())
            } else {
                Err(format!(
                    "/readyz {code} {body}, federator_leader 1: {leading}"
                ))
            }
        },
        || follower_log.log_tail(40),
    )
    .await;
    // The new leader's metrics describe the federation: version, the root, the member.
    let m = wait_for(
        "the new leader's member metrics",
        Duration::from_secs(30),
        || async {
            let m = metrics(follower_addr).await;
            m.contains("federator_member_last_contact_timestamp_seconds{cluster=\"c1\"}")
                .then_some(m)
        },
    )
    .await;
    let root = fed.federation_status().await.roots[0].clone();
    assert!(
        m.contains(&format!(
            "federator_root_expiry_timestamp_seconds{{trust_domain=\"cluster.local\"}} {}\n",
            root.not_after.0.as_second()
        )),
        "{m}"
    );
    assert!(m.contains("federator_build_info{version=\""), "{m}");
    assert!(
        m.contains("federator_member_ready{cluster=\"c1\"} 1\n"),
        "{m}"
    );
    assert!(!m.contains("federator_rotation_phase{"), "no rotation: {m}");

    // And it acts: a renewal the member asks for gets signed.
    let old = fed.cluster_ca("c1").await;
    fed.bump_csr_generation("c1").await;
    fed.wait_new_cluster_ca("c1", &old).await;

    let json_log = std::fs::read_to_string(fed.dir.join("serve-replica-b.log")).unwrap();
    for line in json_log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(json_log.contains("waiting for leadership"), "{json_log}");
}
