//! Root rotation without downtime: when a cluster that shares its trust domain leaves with
//! `--rotate-trust-domain`, and when `federator rotate-root` is run, every member first trusts
//! both roots, the trust domain's members move to the new root, and the old root is dropped
//! after the drain period. Trust between the remaining members is checked continuously; the
//! departed cluster is trusted nowhere at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_api::hub::RotationPhase;
use federator_e2e::rotation::{Rotation, sigkill_and_abort_in};
use federator_e2e::*;

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

/// An enterprise CA as files: an intermediate (`ttl`) under a fresh offline root named after
/// `name`, the chain in `<name>.pem` and its key in `<name>.key` (0600).
fn enterprise_ca(fed: &Federation, name: &str, ttl: Duration) -> (String, String) {
    use federator_core::ca::RootOptions;
    let offline = federator_testkit::pki::root_with(&RootOptions {
        common_name: format!("{name} offline root"),
        path_len: 2,
        ..RootOptions::default()
    });
    let ca = offline
        .create_intermediate(
            &RootOptions {
                common_name: format!("{name} federation CA"),
                ttl,
                ..RootOptions::default()
            },
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    write_ca(fed, name, &ca.chain_pem(), &ca.key().to_pkcs8_pem())
}

fn write_ca(fed: &Federation, name: &str, cert: &str, key: &str) -> (String, String) {
    use std::os::unix::fs::PermissionsExt;
    let (c, k) = (
        fed.dir.join(format!("{name}.pem")),
        fed.dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    (
        c.to_str().unwrap().to_owned(),
        k.to_str().unwrap().to_owned(),
    )
}

/// A self-signed certificate made by openssl with a new key (`key`: the `-newkey` arguments)
/// and `extensions`.
fn openssl_ca(fed: &Federation, name: &str, key: &[&str], extensions: &[&str]) -> (String, String) {
    let (c, k) = (
        fed.dir.join(format!("{name}.pem")),
        fed.dir.join(format!("{name}.key")),
    );
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["req", "-x509", "-nodes", "-days", "3650", "-newkey"])
        .args(key)
        .args(["-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c);
    for e in extensions {
        cmd.args(["-addext", e]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        c.to_str().unwrap().to_owned(),
        k.to_str().unwrap().to_owned(),
    )
}

/// The hub's roots Secret's data.
async fn roots_data(fed: &Federation) -> std::collections::BTreeMap<String, Vec<u8>> {
    use k8s_openapi::api::core::v1::Secret;
    let api: kube::Api<Secret> = kube::Api::namespaced(
        fed.hub.client().await.unwrap(),
        federator_api::names::NAMESPACE,
    );
    let s = api.get(federator_api::names::ROOTS_SECRET).await.unwrap();
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// The rotation in progress, if any.
async fn rotation(fed: &Federation) -> Option<federator_api::hub::RotationStatus> {
    fed.federation_status().await.rotations.into_iter().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_ca_rotates_to_another_offline_root_and_survives_sigkill_and_abort_in_every_phase()
 {
    let all = [
        ("c1", "cluster.local"),
        ("c2", "cluster.local"),
        ("c3", "c3.example"),
    ];
    let names = ["c1", "c2", "c3"];
    let mut fed = Federation::without_init("hub", &all, None).await;
    let year = Duration::from_secs(365 * 86400);
    let (cert_a, key_a) = enterprise_ca(&fed, "a", year);
    fed.federator_ok(&[
        "init",
        "--root",
        "import",
        "--cert",
        &cert_a,
        "--key",
        &key_a,
        "--cluster-ca-ttl",
        "2h",
    ]);
    fed.join_all_and_serve(false).await;
    let root_a = root_of(&fed.federation_status().await, "cluster.local");

    // Bad input: refused with the reason, nothing changes.
    let before = roots_data(&fed).await;
    let not_a_ca = openssl_ca(
        &fed,
        "leaf",
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["basicConstraints=critical,CA:FALSE"],
    );
    let weak = openssl_ca(
        &fed,
        "weak",
        &["rsa:1024"],
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let short = enterprise_ca(&fed, "short", Duration::from_secs(3600));
    for ((cert, key), why) in [
        (&not_a_ca, "not a CA certificate"),
        (&weak, "RSA key of 1024 bits is too weak"),
        (&short, "before the cluster CAs signed under it would"),
        (
            &(cert_a.clone(), key_a.clone()),
            "chains to the current root",
        ),
    ] {
        let out = fed.federator(&["rotate-root", "--cert", cert, "--key", key]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{why}: {err}");
        assert!(err.contains(why), "{why}: {err}");
    }
    let out = fed.federator(&["rotate-root", "--trust-domain", "cluster.local"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(roots_data(&fed).await, before, "nothing changed");
    assert!(rotation(&fed).await.is_none());

    // Trust between every pair, every 100 ms, from here to the end.
    let watch = fed.watch_cacerts(&all, Duration::from_millis(100));
    let old_leaf = mint_leaf(
        &fed.cacerts("c1").await.unwrap(),
        "spiffe://cluster.local/ns/a/sa/old",
    );

    // 1. A rotation held in trusting-new-root (c3's agent is frozen), the hub SIGKILLed and
    // restarted there, then aborted: everyone stays on (or returns to) root a.
    fed.agent_process("c3").pause();
    let (cert_b, key_b) = enterprise_ca(&fed, "b", year);
    let out = fed.federator_ok(&[
        "rotate-root",
        "--cert",
        &cert_b,
        "--key",
        &key_b,
        "--drain",
        "3s",
    ]);
    assert!(
        out.contains("rotating the issuer of every trust domain"),
        "{out}"
    );
    let held = wait_for(
        "the rotation to wait for c3",
        Duration::from_secs(30),
        || async {
            let r = rotation(&fed).await?;
            (r.phase.to_string() == "trusting-new-root"
                && r.waiting_for.iter().any(|w| w.member == "c3"))
            .then_some(r)
        },
    )
    .await;
    assert_eq!(held.trust_domain, "*");
    // A member renewing now gets a CA under root a, which c3 (frozen, its bundle without b)
    // trusts: the new root signs only once every member trusts it (the trust watch runs).
    let before = fed.cluster_ca("c1").await;
    fed.federator_ok(&["renew", "cluster", "c1", "--now"]);
    assert_ne!(fed.cluster_ca("c1").await, before, "c1 was re-issued");
    assert_eq!(
        fed.chain_root("c1").await,
        root_a,
        "renewed during trusting-new-root: signed under the root every member trusts"
    );
    let status = fed.federator(&["status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains("rotating the issuer of every trust domain: trusting-new-root")
            && table.contains("waiting for c3 (bundle-behind)"),
        "{table}"
    );
    fed.serve.as_mut().unwrap().kill();
    fed.start_serve(&[]);
    // The new process derives the phase itself (its metrics), and the status it would write
    // is the one already there: the phase keeps its start.
    wait_for(
        "the restarted hub to find the rotation where it was",
        Duration::from_secs(30),
        || async {
            let m = fed.hub_metrics().await?;
            m.contains(r#"federator_rotation_phase{trust_domain="*",phase="trusting-new-root"} 1"#)
                .then_some(())
        },
    )
    .await;
    let resumed = rotation(&fed).await.unwrap();
    assert_eq!(resumed.phase, held.phase);
    assert_eq!(
        resumed.phase_since, held.phase_since,
        "resumed where it was"
    );
    let out = fed.federator_ok(&["rotate-root", "--abort"]);
    assert!(out.contains(&root_a), "{out}");
    let again = fed.federator(&["rotate-root", "--abort"]);
    assert_eq!(again.status.code(), Some(2), "a second abort is refused");
    fed.agent_process("c3").resume();
    let (phases, _) = follow_rotation(&fed, &all, None).await;
    assert!(phases.contains("draining"), "{phases:?}");
    fed.wait_all_on_root(&names, &root_a).await;
    let events = events_about(&fed.hub.client().await.unwrap(), "Federation", "default").await;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "RotationPhase" && n.contains("aborted")),
        "{events:?}"
    );

    // 2. Held in re-signing and in draining, the hub SIGKILLed and restarted there, aborted.
    for (phase, name) in [
        (RotationPhase::ReSigning, "b2"),
        (RotationPhase::Draining, "b3"),
    ] {
        let (cert, key) = enterprise_ca(&fed, name, year);
        let start = ["--cert", cert.as_str(), "--key", key.as_str()];
        let rotation = Rotation {
            start: &start,
            abort: &[],
            scope: "*",
            members: &all,
            frozen: "c3",
            old_root: &root_a,
        };
        sigkill_and_abort_in(&mut fed, phase, &rotation).await;
    }

    // 3. The full rotation to root c, the hub SIGKILLed while draining.
    let (cert_c, key_c) = enterprise_ca(&fed, "c", year);
    let drain = Duration::from_secs(8);
    let started = std::time::Instant::now();
    fed.federator_ok(&[
        "rotate-root",
        "--cert",
        &cert_c,
        "--key",
        &key_c,
        "--drain",
        "8s",
    ]);
    let mut phases = std::collections::BTreeSet::new();
    let mut old_leaf_while_draining = false;
    let mut removes_at = None;
    loop {
        let Some(r) = rotation(&fed).await else {
            if phases.contains("draining") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        phases.insert(r.phase.to_string());
        if r.phase.to_string() == "draining" {
            old_leaf_while_draining |=
                verifies(&old_leaf, &fed.cacerts("c3").await.unwrap()).is_ok();
            match &removes_at {
                None => {
                    removes_at = r.removes_old_root_at.clone();
                    fed.serve.as_mut().unwrap().kill();
                    fed.start_serve(&[]);
                }
                Some(at) => assert_eq!(
                    r.removes_old_root_at.as_ref(),
                    Some(at),
                    "the restarted hub keeps the drain deadline"
                ),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the rotation did not finish: {phases:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed();
    assert!(
        old_leaf_while_draining,
        "workload certificates of root a work while draining"
    );
    let root_c = root_of(&fed.federation_status().await, "cluster.local");
    assert_ne!(root_c, root_a);
    fed.wait_all_on_root(&names, &root_c).await;
    for m in names {
        assert!(
            verifies(&old_leaf, &fed.cacerts(m).await.unwrap()).is_err(),
            "a workload certificate of root a is still trusted at {m}"
        );
    }
    let report = watch.stop().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.rounds > 20, "{report:?}");
    for m in names {
        assert!(
            report.issuers[m].len() >= 2,
            "{m} moved under the new root: {report:?}"
        );
    }
    println!(
        "figure: import rotation of 3 members to another offline root: {:.1}s wall, {:.1}s without the {}s drain (one hub SIGKILL and restart included); {} trust rounds, no gap",
        wall.as_secs_f64(),
        (wall - drain).as_secs_f64(),
        drain.as_secs(),
        report.rounds
    );
    fed.wait_healthy(&names, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_root_rotates_three_members_and_survives_sigkill_and_abort_in_every_phase() {
    // The local backend's figure, measured as the other backends' are: 3 members, trust
    // between every pair checked every 100 ms, the wall time from rotate-root to the old root
    // gone. The rotated trust domain holds all three members.
    let all = [
        ("c1", "cluster.local"),
        ("c2", "cluster.local"),
        ("c3", "cluster.local"),
    ];
    let mut fed = Federation::start(&all, &["--cluster-ca-ttl", "2h"]).await;
    fed.join_all_and_serve(false).await;
    let old_root = root_of(&fed.federation_status().await, "cluster.local");
    let watch = fed.watch_cacerts(&all, Duration::from_millis(100));
    let drain = Duration::from_secs(3);
    let started = std::time::Instant::now();
    fed.federator_ok(&[
        "rotate-root",
        "--trust-domain",
        "cluster.local",
        "--drain",
        "3s",
    ]);
    let (phases, _) = follow_rotation(&fed, &all, None).await;
    let wall = started.elapsed();
    assert!(phases.contains("draining"), "{phases:?}");
    let new_root = root_of(&fed.federation_status().await, "cluster.local");
    assert_ne!(new_root, old_root);
    fed.wait_all_on_root(&["c1", "c2", "c3"], &new_root).await;

    // Held in each phase, the hub SIGKILLed and restarted there, then aborted: everyone
    // returns to the second root, and nobody loses trust.
    let again = Rotation {
        start: &["--trust-domain", "cluster.local"],
        abort: &["--trust-domain", "cluster.local"],
        scope: "cluster.local",
        members: &all,
        frozen: "c3",
        old_root: &new_root,
    };
    for phase in [
        RotationPhase::TrustingNewRoot,
        RotationPhase::ReSigning,
        RotationPhase::Draining,
    ] {
        sigkill_and_abort_in(&mut fed, phase, &again).await;
    }
    let report = watch.stop().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    println!(
        "figure: local rotation of 3 members: {:.1}s wall, {:.1}s without the {}s drain; {} trust rounds, no gap",
        wall.as_secs_f64(),
        (wall - drain).as_secs_f64(),
        drain.as_secs(),
        report.rounds
    );
}
