//! Root rotation without downtime: when a cluster that shares its trust domain leaves with
//! `--rotate-trust-domain`, and when `federator rotate-root` is run, every member first trusts
//! both roots, the trust domain's members move to the new root, and the old root is dropped
//! after the drain period. Trust between the remaining members is checked continuously; the
//! departed cluster is trusted nowhere at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use federator_api::hub::RotationPhase;
use federator_e2e::*;

/// Checks that every pair of `members` trusts each other right now.
async fn check_trust(fed: &Federation, members: &[(&str, &str)]) {
    let mut files = BTreeMap::new();
    for (m, _) in members {
        files.insert(*m, fed.cacerts(m).await.unwrap());
    }
    for (from, td) in members {
        let leaf = mint_leaf(&files[from], &format!("spiffe://{td}/ns/a/sa/b"));
        for (to, _) in members {
            verifies(&leaf, &files[to])
                .unwrap_or_else(|e| panic!("trust gap during rotation: {from} at {to}: {e}"));
        }
    }
}

/// The SHA-256 of the root of trust domain `td` in the federation's status.
fn root_of(st: &federator_api::hub::FederationStatus, td: &str) -> String {
    let root = st.roots.iter().find(|r| r.trust_domain == td).unwrap();
    root.sha256.clone()
}

/// Runs trust checks until the federation has no rotation left. Returns the phases seen and
/// whether `old_leaf` still verified at `witness` while draining.
async fn follow_rotation(
    fed: &Federation,
    members: &[(&str, &str)],
    old_leaf: Option<(&[Vec<u8>], &str)>,
) -> (BTreeSet<String>, bool) {
    let mut phases = BTreeSet::new();
    let mut metric_phases = BTreeSet::new();
    let mut old_leaf_ok_while_draining = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        check_trust(fed, members).await;
        let st = fed.federation_status().await;
        // The hub's metrics follow the status: a phase series for each rotation, with the
        // time it entered that phase.
        if let Some(m) = fed.hub_metrics().await {
            for line in m.lines() {
                if let Some(labels) = line.strip_prefix("federator_rotation_phase{") {
                    let phase = labels
                        .split("phase=\"")
                        .nth(1)
                        .and_then(|p| p.split('"').next());
                    metric_phases.insert(phase.unwrap_or_default().to_owned());
                    assert!(line.ends_with("} 1"), "{line}");
                }
            }
        }
        for r in &st.rotations {
            assert!(r.phase_since.is_some(), "{r:?}");
            phases.insert(r.phase.to_string());
            if r.phase == RotationPhase::Draining
                && let Some((leaf, witness)) = old_leaf
            {
                old_leaf_ok_while_draining |=
                    verifies(leaf, &fed.cacerts(witness).await.unwrap()).is_ok();
            }
        }
        if st.rotations.is_empty() && !phases.is_empty() {
            assert!(metric_phases.contains("draining"), "{metric_phases:?}");
            assert!(
                metric_phases
                    .iter()
                    .all(|p| ["trusting-new-root", "re-signing", "draining"].contains(&p.as_str())),
                "{metric_phases:?}"
            );
            wait_for(
                "the rotation's series to leave the metrics",
                Duration::from_secs(30),
                || async {
                    let m = fed.hub_metrics().await?;
                    (!m.contains("federator_rotation_phase{")
                        && !m.contains("federator_rotation_phase_start_timestamp_seconds{"))
                    .then_some(())
                },
            )
            .await;
            return (phases, old_leaf_ok_while_draining);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation did not complete; phases seen: {phases:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_rotate_without_a_gap_and_a_departed_cluster_is_cut_off() {
    let all = [
        ("c1", "cluster.local"),
        ("c2", "cluster.local"),
        ("c3", "c3.example"),
    ];
    let mut fed = Federation::start(&all, &["--cluster-ca-ttl", "2h"]).await;
    fed.join_all_and_serve(false).await;
    let old_root = root_of(&fed.federation_status().await, "cluster.local");
    let c2_leaf = mint_leaf(
        &fed.cacerts("c2").await.unwrap(),
        "spiffe://cluster.local/ns/a/sa/b",
    );
    let c1_old_leaf = mint_leaf(
        &fed.cacerts("c1").await.unwrap(),
        "spiffe://cluster.local/ns/a/sa/old",
    );
    // Without shared material c2 would stay trusted: cluster.local's root is shared with c1.
    verifies(&c2_leaf, &fed.cacerts("c3").await.unwrap()).unwrap();

    // c2 leaves and cluster.local's root is rotated.
    let out = fed.federator(&[
        "leave",
        "cluster",
        "c2",
        "--rotate-trust-domain",
        "--rotation-drain",
        "6s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rotating the root of cluster.local"));
    let remaining = [("c1", "cluster.local"), ("c3", "c3.example")];
    let (phases, saw_old_leaf_during_drain) =
        follow_rotation(&fed, &remaining, Some((&c1_old_leaf, "c3"))).await;
    assert!(phases.contains("draining"), "{phases:?}");
    assert!(saw_old_leaf_during_drain);
    fed.wait_healthy(&["c1", "c3"], Duration::from_secs(60))
        .await;

    // The old root is gone everywhere: c2's leaves (and old c1 ones) are trusted nowhere.
    let st = fed.federation_status().await;
    let new_root = root_of(&st, "cluster.local");
    assert_ne!(new_root, old_root);
    for m in ["c1", "c3"] {
        let f = fed.cacerts(m).await.unwrap();
        let roots =
            federator_core::cert::parse_pem_certificates(&f["root-cert.pem"], "roots").unwrap();
        assert!(
            roots
                .iter()
                .all(|r| federator_core::cert::fingerprint(r) != old_root),
            "{m} still trusts the old root"
        );
        assert!(
            verifies(&c2_leaf, &f).is_err(),
            "c2's workload is still trusted at {m}"
        );
        assert!(verifies(&c1_old_leaf, &f).is_err());
    }
    let c1_status = fed.member_cluster("c1").await.unwrap().status.unwrap();
    assert_eq!(
        c1_status.ca_root_sha256, new_root,
        "c1 runs on the new root"
    );
    check_trust(&fed, &remaining).await;

    // And a rotation started by hand, for the other trust domain.
    let out = fed.federator_ok(&[
        "rotate-root",
        "--trust-domain",
        "c3.example",
        "--drain",
        "3s",
    ]);
    assert!(out.contains("new root sha256"));
    let again = fed.federator(&["rotate-root", "--trust-domain", "c3.example"]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a second rotation of the same domain is refused"
    );
    let (phases, _) = follow_rotation(&fed, &remaining, None).await;
    assert!(phases.contains("draining"), "{phases:?}");
    fed.wait_healthy(&["c1", "c3"], Duration::from_secs(60))
        .await;
}
