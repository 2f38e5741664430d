//! One broken member never stalls the others: while a member's API server is down, the hub
//! keeps renewing the rest, reports the broken one, and picks it up again when it returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_e2e::*;

async fn serial(fed: &Federation, m: &str) -> Option<String> {
    Some(fed.cluster_trust(m).await?.status?.installed?.serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_does_not_stall_the_others() {
    let members = [
        ("c1", "cluster.local"),
        ("c2", "cluster.local"),
        ("c3", "c3.example"),
    ];
    let mut fed = Federation::start(
        &members,
        &["--cluster-ca-ttl", "30s", "--renew-at-percent", "40"],
    )
    .await;
    fed.join_all_and_serve(false).await;

    let c3 = fed.members["c3"].cluster.clone();
    c3.stop().await;
    let before = (
        serial(&fed, "c1").await.unwrap(),
        serial(&fed, "c2").await.unwrap(),
    );
    // c1 and c2 renew (every ~12s) while c3 is down, and keep trusting each other.
    wait_for(
        "c1 and c2 to renew while c3 is down",
        Duration::from_secs(45),
        || async {
            let now = (serial(&fed, "c1").await?, serial(&fed, "c2").await?);
            (now.0 != before.0 && now.1 != before.1).then_some(())
        },
    )
    .await;
    let f1 = fed.cacerts("c1").await.unwrap();
    let f2 = fed.cacerts("c2").await.unwrap();
    verifies(&mint_leaf(&f1, "spiffe://cluster.local/ns/a/sa/b"), &f2).unwrap();
    // The hub says what is wrong with c3.
    let problems = wait_for(
        "c3 to be reported unreachable",
        Duration::from_secs(30),
        || async {
            let s = fed.member_cluster("c3").await?.status?;
            (!federator_api::condition::is_true(&s.conditions, "Reachable"))
                .then(|| s.problems.join("; "))
        },
    )
    .await;
    assert!(problems.contains("cannot"), "{problems}");
    let out = fed.federator(&["status"]);
    assert_eq!(out.status.code(), Some(1));

    // c3 comes back: the hub reconnects and c3 converges (its old CA expired meanwhile).
    c3.start_again().await.unwrap();
    fed.wait_healthy(&["c1", "c2", "c3"], Duration::from_secs(120))
        .await;
}
