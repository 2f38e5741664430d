//! Cluster CAs issued for seconds renew again and again, with a fresh key each time, and no
//! pair of members ever stops trusting each other: checked continuously, not just at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use federator_e2e::*;

const MEMBERS: [(&str, &str); 3] = [
    ("c1", "cluster.local"),
    ("c2", "cluster.local"),
    ("c3", "c3.example"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_cluster_cas_renew_without_a_gap_in_trust() {
    let mut fed = Federation::start(
        &MEMBERS,
        &["--cluster-ca-ttl", "20s", "--renew-at-percent", "50"],
    )
    .await;
    fed.join_all_and_serve(false).await;

    let mut serials: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut keys: BTreeMap<&str, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut checks = 0u32;
    let deadline = Instant::now() + Duration::from_secs(50);
    while Instant::now() < deadline {
        let mut files = BTreeMap::new();
        for (name, _) in MEMBERS {
            let f = fed.cacerts(name).await.expect("cacerts exists");
            let report = federator_core::cacerts::inspect(&f, time::OffsetDateTime::now_utc());
            assert!(
                report.is_ok(),
                "{name} has invalid cacerts at some moment: {:?}",
                report.problems
            );
            serials
                .entry(name)
                .or_default()
                .insert(report.ca.unwrap().serial);
            keys.entry(name)
                .or_default()
                .insert(f["ca-key.pem"].clone());
            files.insert(name, f);
        }
        for (from, td) in MEMBERS {
            let leaf = mint_leaf(&files[from], &format!("spiffe://{td}/ns/a/sa/b"));
            for (to, _) in MEMBERS {
                verifies(&leaf, &files[to])
                    .unwrap_or_else(|e| panic!("trust gap: leaf of {from} rejected at {to}: {e}"));
            }
        }
        checks += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (name, _) in MEMBERS {
        let n = serials[name].len();
        assert!(
            n >= 4,
            "{name} renewed only {} time(s) in 50s with a 20s lifetime: {:?}",
            n - 1,
            serials[name]
        );
        assert_eq!(keys[name].len(), n, "{name}: every renewal has a fresh key");
    }
    assert!(checks > 50, "only {checks} checks ran");
}
