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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_cluster_rekeys_one_member_now_and_status_shows_its_age_and_serial() {
    let mut fed = Federation::start(&MEMBERS, &["--cluster-ca-ttl", "720h"]).await;
    fed.join_all_and_serve(false).await;
    let status = |fed: &Federation| {
        let out = fed.federator(&["status", "-o", "json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let row = |v: &serde_json::Value, name: &str| {
        v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    let before = status(&fed);
    let c1 = row(&before, "c1");
    let old_serial = c1["caSerial"].as_str().unwrap().to_owned();
    assert!(!old_serial.is_empty());
    assert!(!c1["caAge"].as_str().unwrap().is_empty(), "{c1}");
    let table = fed.federator_ok(&["status"]);
    assert!(table.contains("CA AGE"), "{table}");
    let old_files = fed.cacerts("c1").await.unwrap();
    let others: Vec<String> = ["c2", "c3"]
        .iter()
        .map(|m| row(&before, m)["caSerial"].as_str().unwrap().to_owned())
        .collect();

    let watch = fed.watch_cacerts(&MEMBERS, Duration::from_millis(100));
    let started = Instant::now();
    let out = fed.federator_ok(&["renew", "cluster", "c1", "--now"]);
    let took = started.elapsed();
    assert!(out.contains("runs on cluster CA"), "{out}");
    let after = status(&fed);
    let c1 = row(&after, "c1");
    assert_ne!(c1["caSerial"], old_serial.as_str(), "{c1}");
    assert_eq!(
        ["c2", "c3"].map(|m| row(&after, m)["caSerial"].as_str().unwrap().to_owned()),
        [others[0].clone(), others[1].clone()],
        "only c1 is re-issued"
    );
    let new_files = fed.cacerts("c1").await.unwrap();
    assert_ne!(
        new_files["ca-key.pem"], old_files["ca-key.pem"],
        "a fresh key"
    );
    assert_eq!(
        new_files["root-cert.pem"], old_files["root-cert.pem"],
        "the trust does not change"
    );
    // A workload certificate of the old CA still verifies (same root): a re-issue is not a
    // revocation (docs/security.md).
    let old_leaf = mint_leaf(&old_files, "spiffe://cluster.local/ns/a/sa/old");
    verifies(&old_leaf, &fed.cacerts("c3").await.unwrap()).unwrap();
    let events = events_about(&fed.hub.client().await.unwrap(), "MemberCluster", "c1").await;
    assert!(
        events.iter().any(|(r, _)| r == "ReissueRequested"),
        "{events:?}"
    );
    // Asked again for the serial it replaced: nothing more happens.
    let m = fed.member_cluster("c1").await.unwrap();
    let generation = fed.cluster_trust("c1").await.unwrap().spec.csr_generation;
    assert_eq!(
        m.metadata.annotations.unwrap()["federator.io/reissue-serial"],
        old_serial
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fed.cluster_trust("c1").await.unwrap().spec.csr_generation,
        generation
    );
    let report = watch.stop().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.rounds > 5, "{report:?}");
    // Not a member, nothing to re-issue.
    let out = fed.federator(&["renew", "cluster", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    println!(
        "figure: renew cluster c1 --now: {:.2}s until it ran on the re-issued CA",
        took.as_secs_f64()
    );
}
