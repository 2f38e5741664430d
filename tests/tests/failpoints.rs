//! Fault injection at every named crash point ([`federator_api::failpoint::POINTS`]): the CLI,
//! the hub or an agent is started armed to SIGKILL itself there, the test triggers the flow
//! that reaches the point and proves the process died there, then starts it again unarmed
//! (or runs the command again) and proves:
//!
//! - convergence: every member healthy, and the hub, the agent and `cacerts` agree on exactly
//!   one intermediate per member ([`wait_agreement`]), with trust between every pair;
//! - no trust gap: a [`TrustWatch`] checks every pair of the members in place all along;
//! - no orphaned or missing objects: every cluster holds exactly the objects (kind, namespace,
//!   name) the same flow leaves without the crash ([`object_keys`]).
//!
//! Together the three tests cover every point; `every_point_has_a_scenario` keeps it so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_api::failpoint::POINTS;
use federator_api::names;
use federator_e2e::crash::{object_keys, wait_agreement, wait_same_objects};
use federator_e2e::snapshot::Snapshotter;
use federator_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};

const JOIN_POINTS: &[&str] = &[
    "join.after-roots",
    "join.after-member-objects",
    "join.after-cluster-trust",
    "join.after-credential",
    "join.after-member-cluster",
];
const LEAVE_POINTS: &[&str] = &["leave.after-member-objects", "leave.after-member-cluster"];

/// What makes `serve` reach a point: prepared before the armed hub starts, or fired after.
#[derive(Clone, Copy, Debug)]
enum HubTrigger {
    /// `federator renew cluster c1`.
    Renew,
    /// The hub's stored reader token for c1 deleted: it issues another and hands it out.
    ReaderTokenGone,
    /// The hub's credential for c1 recorded as due for renewal.
    CredentialDue,
    /// `federator rotate-root` of c1's trust domain.
    Rotation,
}

const HUB_POINTS: &[(&str, HubTrigger)] = &[
    ("hub.after-sign", HubTrigger::Renew),
    ("hub.after-spec-write", HubTrigger::Renew),
    ("hub.after-member-status", HubTrigger::Renew),
    ("hub.after-reader-token", HubTrigger::ReaderTokenGone),
    ("hub.after-peers", HubTrigger::ReaderTokenGone),
    ("hub.after-credential-renewal", HubTrigger::CredentialDue),
    ("hub.after-federation-status", HubTrigger::Rotation),
    ("hub.after-record-resigned", HubTrigger::Rotation),
    ("hub.after-record-finished", HubTrigger::Rotation),
];

/// The agent points a renewal of c1 reaches; the others are reached when c3 joins.
const AGENT_RENEWAL_POINTS: &[&str] = &[
    "agent.after-pending-key",
    "agent.after-promote",
    "agent.after-cacerts",
    "agent.after-status",
];
const AGENT_JOIN_POINTS: &[&str] = &["agent.after-mesh-config", "agent.after-remote-secret"];

#[test]
fn every_point_has_a_scenario() {
    let mut covered: Vec<&str> = JOIN_POINTS
        .iter()
        .chain(LEAVE_POINTS)
        .chain(HUB_POINTS.iter().map(|(p, _)| p))
        .chain(AGENT_RENEWAL_POINTS)
        .chain(AGENT_JOIN_POINTS)
        .copied()
        .collect();
    covered.sort_unstable();
    let mut all: Vec<&str> = POINTS.iter().map(|p| p.name).collect();
    all.sort_unstable();
    assert_eq!(covered, all);
}

/// Waits until `members` are healthy, each agrees with the hub on one intermediate, and every
/// pair trusts each other.
async fn converged(fed: &Federation, members: &[(&str, &str)]) {
    let names: Vec<&str> = members.iter().map(|(m, _)| *m).collect();
    fed.wait_healthy(&names, Duration::from_secs(90)).await;
    for m in &names {
        wait_agreement(fed, m, Duration::from_secs(60)).await;
    }
    check_trust(fed, members).await;
}

async fn snapshotter(fed: &Federation, clusters: &[&str]) -> Snapshotter {
    let mut clients = Vec::new();
    for c in clusters {
        let cluster = fed.testbed.cluster(c).unwrap();
        clients.push(((*c).to_owned(), cluster.client().await.unwrap()));
    }
    Snapshotter::new(clients).await
}

fn leave_args(fed: &Federation, name: &str) -> Vec<String> {
    let kubeconfig = fed.members[name].cluster.kubeconfig_path();
    [
        "leave",
        "cluster",
        name,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Joins `name`, starts its agent and waits until `members` (which include it) converged and
/// every other member holds a remote secret for it.
async fn join_and_converge(fed: &mut Federation, name: &str, members: &[(&str, &str)]) {
    fed.join(name);
    fed.start_agent(name);
    converged(fed, members).await;
    remote_secrets_settled(fed, members).await;
}

/// Waits until every one of `members` holds a remote secret for each other one, and no other.
async fn remote_secrets_settled(fed: &Federation, members: &[(&str, &str)]) {
    for (m, _) in members {
        let want: std::collections::BTreeSet<String> = members
            .iter()
            .filter(|(o, _)| o != m)
            .map(|(o, _)| federator_api::remote::secret_name(o))
            .collect();
        let api: Api<Secret> = Api::namespaced(
            fed.members[*m].cluster.client().await.unwrap(),
            names::ISTIO_NAMESPACE,
        );
        wait_for(
            &format!("{m} to hold remote secrets for {want:?} alone"),
            Duration::from_secs(60),
            || async {
                let lp = kube::api::ListParams::default().labels(&format!(
                    "{}={}",
                    federator_api::remote::MULTI_CLUSTER_LABEL.0,
                    federator_api::remote::MULTI_CLUSTER_LABEL.1
                ));
                let have: std::collections::BTreeSet<String> = api
                    .list_metadata(&lp)
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .collect();
                (have == want).then_some(())
            },
        )
        .await;
    }
}

/// Stops `name`'s agent, runs `leave --kubeconfig` for it (which also finishes a leave that
/// was interrupted), and waits until the `remaining` members no longer trust or discover it.
async fn leave_and_settle(fed: &mut Federation, name: &str, remaining: &[(&str, &str)]) {
    if let Some(agent) = fed.members.get_mut(name).and_then(|m| m.agent.as_mut()) {
        agent.kill();
    }
    fed.federator_ok(&strs(&leave_args(fed, name)));
    let gone_td = fed.members[name].trust_domain.clone();
    let tds: Vec<&str> = remaining.iter().map(|(_, td)| *td).collect();
    for (m, _) in remaining {
        wait_for(
            &format!("{m} to stop trusting {gone_td}"),
            Duration::from_secs(60),
            || async {
                let ct = fed.cluster_trust(m).await?;
                let installed = ct.status?.installed?;
                (installed.bundle_generation == ct.spec.bundle_generation
                    && ct
                        .spec
                        .bundle
                        .iter()
                        .all(|e| tds.contains(&e.trust_domain.as_str())))
                .then_some(())
            },
        )
        .await;
    }
    remote_secrets_settled(fed, remaining).await;
}

/// Three clusters c1, c2, c3 (trust domains `cluster.local`, `c2.example`, `c3.example`), c1
/// and c2 joined (c1 with a mesh config when `mesh_config_on_c1`), serve and both agents
/// running, converged with their remote secrets in place; c3 is left to join later.
async fn two_of_three(mesh_config_on_c1: bool) -> Federation {
    let two = [("c1", "cluster.local"), ("c2", "c2.example")];
    let mut fed = Federation::start(&[two[0], two[1], ("c3", "c3.example")], &[]).await;
    fed.join("c1");
    if mesh_config_on_c1 {
        fed.install_mesh_config("c1").await;
    }
    fed.join("c2");
    fed.start_serve(&[]);
    fed.start_agent("c1");
    fed.start_agent("c2");
    converged(&fed, &two).await;
    remote_secrets_settled(&fed, &two).await;
    fed
}

/// Stops `watch` and asserts it saw no trust gap between `whom` in more than `min_rounds`
/// rounds.
async fn no_trust_gap(watch: TrustWatch, whom: &str, min_rounds: usize) {
    let report = watch.stop().await;
    eprintln!(
        "trust between {whom} checked {} times; issuers {:?}",
        report.rounds, report.issuers
    );
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(report.rounds > min_rounds, "{report:?}");
}

/// Every point of `federator join` and `leave`: the command is killed there, run again, and
/// the result is the one of a run that was never interrupted, object for object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_crashed_at_every_point_finish_when_run_again() {
    let c1 = [("c1", "cluster.local")];
    let both = [("c1", "cluster.local"), ("c2", "c2.example")];
    let mut fed = Federation::start(&both, &[]).await;
    fed.join("c1");
    fed.start_serve(&[]);
    fed.start_agent("c1");
    converged(&fed, &c1).await;
    let watch = fed.watch_cacerts(&c1, Duration::from_millis(200));

    // The reference: one join and one leave of c2, uninterrupted.
    join_and_converge(&mut fed, "c2", &both).await;
    let snap = snapshotter(&fed, &["hub", "c1", "c2"]).await;
    let joined = object_keys(&snap).await;
    leave_and_settle(&mut fed, "c2", &c1).await;
    let left = object_keys(&snap).await;

    let join = fed.join_args("c2");
    let leave = leave_args(&fed, "c2");
    for (i, point) in JOIN_POINTS.iter().enumerate() {
        eprintln!("join crashes at {point}");
        fed.federator_crashes_at(&strs(&join), point);
        join_and_converge(&mut fed, "c2", &both).await;
        wait_same_objects(
            &format!("join crashed at {point}, run again"),
            &snap,
            &joined,
        )
        .await;

        let point = LEAVE_POINTS[i % LEAVE_POINTS.len()];
        eprintln!("leave crashes at {point}");
        fed.agent_process("c2").kill();
        fed.federator_crashes_at(&strs(&leave), point);
        leave_and_settle(&mut fed, "c2", &c1).await;
        wait_same_objects(
            &format!("leave crashed at {point}, run again"),
            &snap,
            &left,
        )
        .await;
    }

    // Without --kubeconfig, a leave killed after the MemberCluster went is finished by running
    // it again: it finds only the hub's Secrets for the cluster left, and removes them.
    join_and_converge(&mut fed, "c2", &both).await;
    fed.agent_process("c2").kill();
    fed.federator_crashes_at(&["leave", "cluster", "c2"], "leave.after-member-cluster");
    let out = fed.federator_ok(&["leave", "cluster", "c2"]);
    assert!(out.contains("interrupted leave"), "{out}");
    let hub_secrets: Api<Secret> =
        Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    for s in [
        names::member_credential_secret("c2"),
        names::reader_credential_secret("c2"),
    ] {
        assert!(
            out.contains(&format!(
                "removed Secret {}/{s} on the hub",
                names::NAMESPACE
            )),
            "{out}"
        );
        assert!(hub_secrets.get_opt(&s).await.unwrap().is_none(), "{s}");
    }
    // What stays in the member is what a leave without --kubeconfig leaves; the admin's
    // leave then removes it.
    leave_and_settle(&mut fed, "c2", &c1).await;
    wait_same_objects(
        "leave finished without --kubeconfig, then with it",
        &snap,
        &left,
    )
    .await;

    no_trust_gap(watch, "c1", 20).await;
}

/// Every point of `serve`: it is killed there while two members run, started again, and the
/// federation converges with no trust gap and the same objects as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_crashed_at_every_point_converges_with_no_trust_gap() {
    let members = [("c1", "cluster.local"), ("c2", "c2.example")];
    let three = [
        ("c1", "cluster.local"),
        ("c2", "c2.example"),
        ("c3", "c3.example"),
    ];
    let mut fed = two_of_three(false).await;
    let snap = snapshotter(&fed, &["hub", "c1", "c2", "c3"]).await;
    let steady = object_keys(&snap).await;
    let hub_secrets: Api<Secret> =
        Api::namespaced(fed.hub.client().await.unwrap(), names::NAMESPACE);
    let watch = fed.watch_cacerts(&members, Duration::from_millis(200));

    for (point, trigger) in HUB_POINTS {
        eprintln!("serve crashes at {point} ({trigger:?})");
        fed.serve.as_mut().unwrap().kill();
        match trigger {
            HubTrigger::ReaderTokenGone => {
                hub_secrets
                    .delete(&names::reader_credential_secret("c1"), &Default::default())
                    .await
                    .unwrap();
            }
            HubTrigger::CredentialDue => {
                // Issued two hours ago, expiring in one: past two thirds of its lifetime.
                let now = time::OffsetDateTime::now_utc();
                let at = |d: time::Duration| federator_core::cert::rfc3339(now + d);
                let patch = serde_json::json!({"metadata": {"annotations": {
                    "federator.io/token-issued": at(time::Duration::hours(-2)),
                    "federator.io/token-expires": at(time::Duration::hours(1)),
                }}});
                hub_secrets
                    .patch(
                        &names::member_credential_secret("c1"),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .unwrap();
            }
            HubTrigger::Renew | HubTrigger::Rotation => {}
        }
        fed.start_serve_armed(&[], point);
        match trigger {
            HubTrigger::Renew => {
                fed.federator_ok(&["renew", "cluster", "c1"]);
            }
            HubTrigger::Rotation => {
                fed.federator_ok(&[
                    "rotate-root",
                    "--trust-domain",
                    "cluster.local",
                    "--drain",
                    "2s",
                ]);
            }
            HubTrigger::ReaderTokenGone | HubTrigger::CredentialDue => {}
        }
        fed.serve_crashed_at(point).await;
        fed.start_serve(&[]);
        if matches!(trigger, HubTrigger::Rotation) {
            wait_for(
                "the rotation to finish",
                Duration::from_secs(120),
                || async {
                    fed.federation_status()
                        .await
                        .rotations
                        .is_empty()
                        .then_some(())
                },
            )
            .await;
        }
        converged(&fed, &members).await;
        remote_secrets_settled(&fed, &members).await;
        if matches!(trigger, HubTrigger::CredentialDue) {
            let s = hub_secrets
                .get(&names::member_credential_secret("c1"))
                .await
                .unwrap();
            let issued = &s.metadata.annotations.unwrap()["federator.io/token-issued"];
            let issued =
                time::OffsetDateTime::parse(issued, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            assert!(
                time::OffsetDateTime::now_utc() - issued < time::Duration::minutes(10),
                "the credential was renewed (issued {issued})"
            );
        }
        wait_same_objects(&format!("serve crashed at {point}"), &snap, &steady).await;
    }

    // The bundle fan-out: c3, a new trust domain, joins, and serve is killed at its first
    // write of the new bundle into a member. The reference is the same join uninterrupted.
    join_and_converge(&mut fed, "c3", &three).await;
    let joined = object_keys(&snap).await;
    leave_and_settle(&mut fed, "c3", &members).await;
    // c3 keeps its namespaces and cacerts after it left.
    let left = object_keys(&snap).await;
    let point = "hub.after-spec-write";
    eprintln!("serve crashes at {point} (c3 joins: the bundle fan-out)");
    fed.serve.as_mut().unwrap().kill();
    fed.start_serve_armed(&[], point);
    fed.join("c3");
    fed.start_agent("c3");
    fed.serve_crashed_at(point).await;
    fed.start_serve(&[]);
    converged(&fed, &three).await;
    remote_secrets_settled(&fed, &three).await;
    wait_same_objects("serve crashed in the bundle fan-out", &snap, &joined).await;
    leave_and_settle(&mut fed, "c3", &members).await;
    wait_same_objects("c3 left after the crash", &snap, &left).await;

    no_trust_gap(watch, "c1 and c2", 50).await;
}

/// Every point of the agent: c1's agent is killed there during a renewal or while c3 joins,
/// started again, and c1 converges with no trust gap and the same objects as a run without
/// the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_crashed_at_every_point_converges_with_no_trust_gap() {
    let two = [("c1", "cluster.local"), ("c2", "c2.example")];
    let three = [
        ("c1", "cluster.local"),
        ("c2", "c2.example"),
        ("c3", "c3.example"),
    ];
    // c1 has a mesh config, so the agent merges the other trust domains' roots into it.
    let mut fed = two_of_three(true).await;
    let watch = fed.watch_cacerts(&two, Duration::from_millis(200));
    let snap = snapshotter(&fed, &["hub", "c1", "c2", "c3"]).await;
    let steady = object_keys(&snap).await;

    for point in AGENT_RENEWAL_POINTS {
        eprintln!("c1's agent crashes at {point} (renewal)");
        let before = fed.cluster_ca("c1").await;
        fed.agent_process("c1").kill();
        fed.start_agent_armed("c1", point);
        fed.federator_ok(&["renew", "cluster", "c1"]);
        fed.agent_crashed_at("c1", point).await;
        fed.start_agent("c1");
        fed.wait_new_cluster_ca("c1", &before).await;
        converged(&fed, &two).await;
        wait_same_objects(&format!("the agent crashed at {point}"), &snap, &steady).await;
    }

    // The reference for c3's join: once uninterrupted (c3's namespaces and cacerts stay after
    // it leaves, so the state after a leave is the one after this first leave).
    join_and_converge(&mut fed, "c3", &three).await;
    let joined = object_keys(&snap).await;
    leave_and_settle(&mut fed, "c3", &two).await;
    let left = object_keys(&snap).await;
    for point in AGENT_JOIN_POINTS {
        eprintln!("c1's agent crashes at {point} (c3 joins)");
        fed.agent_process("c1").kill();
        fed.start_agent_armed("c1", point);
        fed.join("c3");
        fed.start_agent("c3");
        fed.agent_crashed_at("c1", point).await;
        fed.start_agent("c1");
        converged(&fed, &three).await;
        remote_secrets_settled(&fed, &three).await;
        wait_same_objects(&format!("the agent crashed at {point}"), &snap, &joined).await;
        leave_and_settle(&mut fed, "c3", &two).await;
        wait_same_objects(&format!("c3 left after {point}"), &snap, &left).await;
    }
    no_trust_gap(watch, "c1 and c2", 50).await;
}
