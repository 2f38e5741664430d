//! The proofs with real istiod, for one istiod version (or a mix of them): Istio accepts the
//! CA the agents install, and workloads of different clusters trust each other — through
//! Istio's own CA service and a real mutual-TLS handshake, not by inspecting Secrets.
//!
//! `tests/istiod.rs` runs them against the versions CI builds, `tests/istiod_matrix.rs`
//! against the rest of the compatibility matrix (`scripts/istio-matrix`). What each version
//! is expected to do comes from `federator_core::istiod::IstiodRules`, and
//! [`root_comparison`] checks those rules against the real istiod directly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use federator_api::hub::{RotationPhase, RotationStatus, RotationWait, WaitReason};
use federator_api::member::IstiodState;
use federator_api::names;
use federator_core::cacerts;
use federator_core::istiod::{IstiodRules, IstiodVersion, RootComparison, RootUpdate};
use federator_e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use mtls::{SpiffeVerifier, Workload};
use rustls_pki_types::{CertificateDer, UnixTime};
use testbed::istiod::{CaMode, LOG_HOT_RELOAD};
use testbed::{Cluster, Istiod};

const OUTSIDER: &str = "outsider";
const NS: &str = "web";
const SA: &str = "web";
/// What istiod logs when it accepts a changed `root-cert.pem` (the whole line ends with it).
const LOG_ROOT_ACCEPTED: &str = "\tUpdating new ROOT-CA";
/// What istiod logs when it ignores a changed `root-cert.pem`.
const LOG_ROOT_IGNORED: &str = "ROOT-CA not supported";

pub fn figure(what: &str, value: impl std::fmt::Display) {
    eprintln!("[figure] {what}: {value}");
}

fn rules(version: &str) -> IstiodRules {
    IstiodRules::for_version(Some(IstiodVersion::parse(version).unwrap()))
}

/// Whether a reported version is `version`.
fn reports(reported: Option<&IstiodVersion>, version: &str) -> bool {
    reported.is_some_and(|v| v.to_string() == version)
}

/// Lines of istiod's whole log (across restarts) that end with `LOG_ROOT_ACCEPTED`.
fn roots_accepted(i: &Istiod) -> usize {
    i.log()
        .lines()
        .filter(|l| l.ends_with(LOG_ROOT_ACCEPTED))
        .count()
}

/// Waits until `i` counts at least `n` restarts. The counter moves once the restarted process
/// is ready, which can be a moment after it already published its ConfigMaps.
async fn wait_restarts(i: &Istiod, n: u32) {
    wait_for(
        &format!("istiod of {} to count {n} restart(s)", i.cluster_name()),
        Duration::from_secs(30),
        || async { (i.restarts() >= n).then_some(()) },
    )
    .await;
}

/// The root of `trust_domain` in the bundle the hub sent a member (DER).
async fn federation_root(fed: &Federation, member: &str, trust_domain: &str) -> Vec<u8> {
    let ct = fed.cluster_trust(member).await.unwrap();
    let entry = ct
        .spec
        .bundle
        .iter()
        .find(|e| e.trust_domain == trust_domain)
        .unwrap_or_else(|| panic!("no root for {trust_domain} in {member}'s bundle"));
    first_cert(entry.roots_pem.as_bytes())
}

/// The cluster CA in a member's `cacerts` (DER).
async fn cluster_ca(fed: &Federation, member: &str) -> Vec<u8> {
    let files = fed.cacerts(member).await.unwrap();
    first_cert(&files[cacerts::CA_CERT])
}

/// The trust domain whose root comes last in a member's `root-cert.pem`. Rotating it makes
/// the final step (dropping its old root) remove a root from the middle of the text.
async fn trust_domain_of_last_root(fed: &Federation, member: &str) -> String {
    let files = fed.cacerts(member).await.unwrap();
    let roots =
        federator_core::cert::parse_pem_certificates(&files[cacerts::ROOT_CERT], "roots").unwrap();
    let last = roots.last().unwrap();
    let ct = fed.cluster_trust(member).await.unwrap();
    ct.spec
        .bundle
        .iter()
        .find(|e| first_cert(e.roots_pem.as_bytes()) == *last)
        .unwrap()
        .trust_domain
        .clone()
}

/// The agent's `status.istiod` of a member, once it reports `version`.
async fn istiod_report(
    fed: &Federation,
    member: &str,
    version: &str,
) -> federator_api::member::IstiodStatus {
    wait_for(
        &format!("{member}'s agent to report istiod {version}"),
        Duration::from_secs(30),
        || async {
            let st = fed.cluster_trust(member).await?.status?.istiod?;
            reports(st.version.as_ref(), version).then_some(st)
        },
    )
    .await
}

/// Waits until every istiod publishes `count` roots in `NS`.
async fn wait_published_count(
    clusters: &BTreeMap<String, Cluster>,
    count: usize,
    what: &str,
) -> Duration {
    let t = Instant::now();
    for (name, cluster) in clusters {
        wait_for(
            &format!("{name}'s istiod to publish {count} roots ({what})"),
            Duration::from_secs(120),
            || async {
                let roots = published_roots(cluster, NS).await?;
                (pem_count(&roots) == count).then_some(())
            },
        )
        .await;
    }
    t.elapsed()
}

/// Every pair of workloads completes mutual TLS, with the bundle its istiod publishes now.
async fn all_pairs_trust(workloads: &BTreeMap<String, Workload>) {
    let names: Vec<&String> = workloads.keys().collect();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            assert_mtls(&workloads[*a], &workloads[*b]).await;
        }
    }
}

/// Fresh workload certificates and current trust for every member.
async fn fresh_workloads(
    clusters: &BTreeMap<String, Cluster>,
    istiods: &BTreeMap<String, Istiod>,
    sa: &str,
) -> BTreeMap<String, Workload> {
    let mut out = BTreeMap::new();
    for (name, cluster) in clusters {
        out.insert(
            name.clone(),
            workload(cluster, &istiods[name], NS, sa).await,
        );
    }
    out
}

/// Follows the rotation of `trust_domain` until it is gone from the hub's status; returns the
/// phases seen and the waits reported.
async fn follow_rotation(
    fed: &Federation,
    trust_domain: &str,
) -> (Vec<RotationPhase>, Vec<RotationWait>) {
    let mut phases: Vec<RotationPhase> = Vec::new();
    let mut waits = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = fed.federation_status().await;
        match st.rotations.iter().find(|r| r.trust_domain == trust_domain) {
            Some(r) => {
                if phases.last() != Some(&r.phase) {
                    phases.push(r.phase);
                }
                for w in &r.waiting_for {
                    if !waits.contains(w) {
                        waits.push(w.clone());
                    }
                }
            }
            None if !phases.is_empty() => return (phases, waits),
            None => {}
        }
        assert!(
            Instant::now() < deadline,
            "the rotation of {trust_domain} did not finish; phases {phases:?}, waits {waits:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `federator rotate-root` for `trust_domain` (3 s drain), follows it to its end and
/// waits until every istiod publishes the bundle without the old root.
async fn rotate(
    fed: &Federation,
    trust_domain: &str,
    clusters: &BTreeMap<String, Cluster>,
) -> (Vec<RotationPhase>, Vec<RotationWait>) {
    fed.federator_ok(&[
        "rotate-root",
        "--trust-domain",
        trust_domain,
        "--drain",
        "3s",
    ]);
    let seen = follow_rotation(fed, trust_domain).await;
    wait_published_count(clusters, 2, "old root dropped").await;
    seen
}

/// The federation proof on istiod `version`: plug-in mode, issuance under the agent's cluster
/// CA, cross-cluster and cross-trust-domain mTLS, an outsider refused, leaf clamping as the
/// version does it, renewal hot-reloaded, a root rotation (add, then a removal from the middle
/// of `root-cert.pem`: hot on 1.30+, a restart on ≤ 1.29), and leave.
pub async fn federation(version: &str) {
    let started = Instant::now();
    let rules = rules(version);
    let members: [(&str, &str); 3] = [
        ("cluster-1", "cluster.local"),
        ("cluster-2", "cluster.local"),
        ("cluster-3", "east.example"),
    ];
    // Short cluster CAs, so that a 24 h workload certificate outlives its issuer (the leaf
    // clamping check).
    let mut fed = Federation::start_with_outsiders(
        "cluster-1",
        &members,
        &[OUTSIDER],
        &["--cluster-ca-ttl", "2h"],
    )
    .await;
    for (name, _) in members {
        fed.join(name);
        fed.install_mesh_config(name).await;
    }
    fed.start_serve(&[]);
    for (name, _) in members {
        fed.start_agent(name);
    }
    fed.wait_healthy(
        &["cluster-1", "cluster-2", "cluster-3"],
        Duration::from_secs(120),
    )
    .await;
    figure(
        "federation healthy after",
        format!("{:.1?}", started.elapsed()),
    );

    // istiod in every member, started once cacerts exist: plug-in mode. The outsider has no
    // cacerts: istiod's own self-signed CA, with the same trust domain as cluster-1.
    let mut istiods: BTreeMap<String, Istiod> = BTreeMap::new();
    for (name, td) in members {
        let i = fed.start_istiod_version(name, td, version).await;
        assert_eq!(i.version(), version);
        assert_eq!(
            i.ca_mode(),
            Some(CaMode::PlugIn),
            "{name}: {}",
            i.current_log()
        );
        assert!(i.current_log().contains("Added cacerts files watcher"));
        istiods.insert(name.to_owned(), i);
    }
    let outsider = fed
        .start_istiod_version(OUTSIDER, "cluster.local", version)
        .await;
    assert_eq!(outsider.ca_mode(), Some(CaMode::SelfSigned));
    for (name, i) in istiods.iter().chain([(&OUTSIDER.to_owned(), &outsider)]) {
        figure(
            &format!("istiod {version} {name} start-to-ready"),
            format!("{:?}", i.ready_in()),
        );
    }
    let clusters: BTreeMap<String, Cluster> = members
        .iter()
        .map(|(n, _)| ((*n).to_owned(), fed.members[*n].cluster.clone()))
        .collect();
    let outsider_cluster = fed.testbed.cluster(OUTSIDER).unwrap().clone();

    // The agents read the version from the Deployment, and warn where it does not clamp.
    for (name, _) in members {
        let report = istiod_report(&fed, name, version).await;
        assert_eq!(
            report.warnings.is_empty(),
            rules.clamps_leaf_to_signer(),
            "{name}: {report:?}"
        );
    }
    fed.wait_healthy(
        &["cluster-1", "cluster-2", "cluster-3"],
        Duration::from_secs(60),
    )
    .await;

    // A workload certificate from each member's istiod chains through that member's cluster
    // CA (what the agent installed) to the federation root of its trust domain.
    let mut workloads: BTreeMap<String, Workload> = BTreeMap::new();
    for (name, td) in members {
        let w = workload(&clusters[name], &istiods[name], NS, SA).await;
        assert_eq!(w.id(), format!("spiffe://{td}/ns/{NS}/sa/{SA}"));
        let chain = w.cert().chain_der();
        assert_eq!(
            chain[1],
            cluster_ca(&fed, name).await,
            "{name}: the issuer is the agent's cluster CA"
        );
        let root = federation_root(&fed, name, td).await;
        assert_eq!(
            chain.last(),
            Some(&root),
            "{name}: the chain ends at the root"
        );
        federator_core::verify::verify_workload_chain(
            &chain,
            std::slice::from_ref(&root),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        // istiod's answer ends with its whole root-cert.pem: the federation's two roots.
        assert_eq!(w.cert().roots().len(), 2, "{name}");
        assert_eq!(
            w.trust().len(),
            2,
            "{name}: istio-ca-root-cert holds both roots"
        );
        workloads.insert(name.to_owned(), w);
    }
    let outsider_w = workload(&outsider_cluster, &outsider, NS, SA).await;
    assert_eq!(
        outsider_w.id(),
        workloads["cluster-1"].id(),
        "same SPIFFE ID"
    );

    // Leaf clamping: a 24 h certificate from a 2 h cluster CA.
    let long = request_workload_cert(
        &clusters["cluster-1"],
        &istiods["cluster-1"],
        NS,
        "long",
        Duration::from_secs(24 * 3600),
    )
    .await
    .unwrap();
    let ca_not_after = federator_core::cert::validity(
        &federator_core::cert::parse_der(&cluster_ca(&fed, "cluster-1").await).unwrap(),
    )
    .1;
    if rules.clamps_leaf_to_signer() {
        assert_eq!(long.not_after, ca_not_after, "{version} clamps to the CA");
    } else {
        assert!(
            long.not_after > ca_not_after + time::Duration::hours(20),
            "{version} does not clamp: {} vs CA {}",
            long.not_after,
            ca_not_after
        );
    }

    // Mutual TLS across clusters and trust domains, each side trusting only its own bundle.
    let t = Instant::now();
    assert_mtls(&workloads["cluster-1"], &workloads["cluster-3"]).await;
    figure(
        "mTLS handshake pair (both directions)",
        format!("{:?}", t.elapsed()),
    );
    all_pairs_trust(&workloads).await;
    // The outsider fails both ways, although its workload claims cluster-1's very SPIFFE ID.
    for member in ["cluster-1", "cluster-3"] {
        let errors = assert_no_mtls(&workloads[member], &outsider_w).await;
        assert!(
            errors.iter().all(|e| e.contains("UnknownIssuer")),
            "{member}: {errors:?}"
        );
    }

    // Renewal of cluster-1's CA (the hub asks for a new CSR): istiod hot-reloads it, no restart.
    let i1 = &istiods["cluster-1"];
    let pid = i1.pid();
    let reloads = i1.log_count(LOG_HOT_RELOAD);
    let old_ca = cluster_ca(&fed, "cluster-1").await;
    let old_w = workloads["cluster-1"].clone();
    fed.bump_csr_generation("cluster-1").await;
    let t = Instant::now();
    let new_ca = wait_for(
        "cluster-1's new cluster CA",
        Duration::from_secs(60),
        || async {
            let ca = cluster_ca(&fed, "cluster-1").await;
            (ca != old_ca).then_some(ca)
        },
    )
    .await;
    wait_for("istiod to hot-reload", Duration::from_secs(30), || async {
        (i1.log_count(LOG_HOT_RELOAD) > reloads).then_some(())
    })
    .await;
    figure(
        &format!("istiod {version} renewal: CSR bump to istiod reload"),
        format!("{:?}", t.elapsed()),
    );
    assert_eq!(i1.pid(), pid, "same istiod process");
    assert_eq!(i1.restarts(), 0);
    let deployment: Api<Deployment> = Api::namespaced(
        clusters["cluster-1"].client().await.unwrap(),
        names::ISTIO_NAMESPACE,
    );
    let template = deployment
        .get(names::ISTIOD_DEPLOYMENT)
        .await
        .unwrap()
        .spec
        .unwrap()
        .template;
    assert!(
        template
            .metadata
            .and_then(|m| m.annotations)
            .is_none_or(|a| !a.contains_key(names::RESTARTED_AT_ANNOTATION)),
        "no restart was requested"
    );
    wait_for(
        "the agent to report a hot reload",
        Duration::from_secs(30),
        || async {
            let ct = fed.cluster_trust("cluster-1").await?;
            (ct.status?.istiod?.state == IstiodState::HotReload).then_some(())
        },
    )
    .await;
    // New certificates chain to the new intermediate.
    let new_w = workload(&clusters["cluster-1"], i1, NS, SA).await;
    assert_eq!(new_w.cert().chain_der()[1], new_ca);
    assert_ne!(old_w.cert().chain_der()[1], new_ca);
    // Both old and new certificates work with cluster-3 (the roots did not change) ...
    assert_mtls(&old_w, &workloads["cluster-3"]).await;
    assert_mtls(&new_w, &workloads["cluster-3"]).await;
    assert_mtls(&old_w, &new_w).await;
    // ... and the old one verifies until it expires, not after.
    let verifier = SpiffeVerifier::new(workloads["cluster-3"].trust()).unwrap();
    let leaf = old_w.cert().leaf();
    let inter: &[CertificateDer<'_>] = old_w.cert().intermediates();
    let at = |t: time::OffsetDateTime| {
        UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp() as u64))
    };
    let expiry = old_w.cert().not_after;
    verifier
        .verify_peer(
            leaf,
            inter,
            at(expiry - time::Duration::seconds(1)),
            webpki::KeyUsage::client_auth(),
        )
        .unwrap();
    let expired = verifier
        .verify_peer(
            leaf,
            inter,
            at(expiry + time::Duration::seconds(1)),
            webpki::KeyUsage::client_auth(),
        )
        .unwrap_err();
    assert!(expired.to_string().contains("Expired"), "{expired}");

    // Root rotation of the trust domain whose root is last in root-cert.pem: the new root is
    // appended (every version hot-reloads it), then the old one leaves from the middle.
    let rotated = trust_domain_of_last_root(&fed, "cluster-1").await;
    let accepted_before: BTreeMap<&str, usize> = istiods
        .iter()
        .map(|(n, i)| (n.as_str(), roots_accepted(i)))
        .collect();
    let before_rotation = workloads.clone();
    let t = Instant::now();
    let (phases, waits) = rotate(&fed, &rotated, &clusters).await;
    figure(
        &format!("istiod {version} root rotation (3 s drain) to every istiod publishing"),
        format!("{:.1?}", t.elapsed()),
    );
    assert!(
        phases.contains(&RotationPhase::Draining),
        "{phases:?} {waits:?}"
    );
    let comparison = rules.root_comparison();
    for (name, i) in &istiods {
        let report = istiod_report(&fed, name, version).await;
        match comparison {
            RootComparison::CertificateSet => {
                // Add and remove both hot-reloaded.
                assert_eq!(i.restarts(), 0, "{name}: {report:?}");
                assert!(
                    roots_accepted(i) >= accepted_before[name.as_str()] + 2,
                    "{name}"
                );
                assert!(!i.log().contains(LOG_ROOT_IGNORED), "{name}");
            }
            _ => {
                // The add hot-reloaded; the removal from the middle needed a restart.
                wait_restarts(i, 1).await;
                assert_eq!(i.restarts(), 1, "{name}: {report:?}");
                assert!(
                    roots_accepted(i) > accepted_before[name.as_str()],
                    "{name}: the add was taken hot"
                );
                assert_eq!(report.state, IstiodState::Restarted, "{name}: {report:?}");
                assert!(report.message.contains("substring"), "{report:?}");
            }
        }
        assert_eq!(i.ca_mode(), Some(CaMode::PlugIn));
    }
    // Old certificates of the rotated trust domain are no longer trusted; fresh ones chain to
    // the new root and every pair trusts each other.
    let fresh = fresh_workloads(&clusters, &istiods, "after-rotation").await;
    all_pairs_trust(&fresh).await;
    for (name, td) in members {
        let w = with_current_trust(&before_rotation[name], &clusters[name], NS).await;
        let peer = members.iter().find(|(n, _)| *n != name).unwrap().0;
        if td == rotated {
            assert_no_mtls(&w, &fresh[peer]).await;
            assert_eq!(
                fresh[name].cert().chain_der().last(),
                Some(&federation_root(&fed, name, td).await)
            );
        }
    }
    let workloads = fresh;
    let restarts_after_rotation: BTreeMap<&str, u32> = istiods
        .iter()
        .map(|(n, i)| (n.as_str(), i.restarts()))
        .collect();

    // cluster-3 leaves: its trust domain's root leaves the bundle of cluster-1 and cluster-2
    // (the first or last root: every version hot-reloads it) and their istiods publish it.
    let t = Instant::now();
    let accepted_before: BTreeMap<&str, usize> = istiods
        .iter()
        .map(|(n, i)| (n.as_str(), roots_accepted(i)))
        .collect();
    fed.federator_ok(&["leave", "cluster", "cluster-3"]);
    for name in ["cluster-1", "cluster-2"] {
        wait_for(
            &format!("{name}'s istiod to publish a bundle without east.example"),
            Duration::from_secs(90),
            || async {
                let roots = published_roots(&clusters[name], NS).await?;
                (pem_count(&roots) == 1).then_some(())
            },
        )
        .await;
        assert_eq!(
            istiods[name].restarts(),
            restarts_after_rotation[name],
            "{name}: no restart"
        );
        assert!(
            roots_accepted(&istiods[name]) > accepted_before[name],
            "{name}: no root update in istiod's log"
        );
    }
    figure("leave to published bundles", format!("{:?}", t.elapsed()));
    let c1 = with_current_trust(&workloads["cluster-1"], &clusters["cluster-1"], NS).await;
    let c2 = with_current_trust(&workloads["cluster-2"], &clusters["cluster-2"], NS).await;
    let c3 = with_current_trust(&workloads["cluster-3"], &clusters["cluster-3"], NS).await;
    for stayed in [&c1, &c2] {
        let errors = assert_no_mtls(stayed, &c3).await;
        assert!(
            errors.iter().all(|e| e.contains("UnknownIssuer")),
            "{errors:?}"
        );
    }
    assert_mtls(&c1, &c2).await;
    let fresh = workload(&clusters["cluster-1"], &istiods["cluster-1"], NS, SA).await;
    assert_eq!(
        fresh.cert().roots().len(),
        1,
        "istiod now hands out one root"
    );
    assert_mtls(&fresh, &c2).await;
    assert_no_mtls(&fresh, &c3).await;
    // The departed cluster's istiod still runs its own mesh.
    let c3_again = workload(&clusters["cluster-3"], &istiods["cluster-3"], NS, "other").await;
    assert_mtls(&c3, &c3_again).await;

    for (name, i) in istiods.iter().chain([(&OUTSIDER.to_owned(), &outsider)]) {
        figure(
            &format!("istiod {version} {name} RSS"),
            format!("{} MiB", i.rss_kib().unwrap_or(0) / 1024),
        );
    }
    figure(
        &format!("istiod {version} federation proof duration"),
        format!("{:.1?}", started.elapsed()),
    );
}

/// istiod `version` started before its cluster joins runs its self-signed CA; the agent
/// restarts it into plug-in mode (no version watches `cacerts` in self-signed mode).
pub async fn self_signed_restart(version: &str) {
    let started = Instant::now();
    let mut fed =
        Federation::start_on("cluster-1", &[("cluster-1", "cluster.local")], &[], None).await;
    let cluster = fed.members["cluster-1"].cluster.clone();

    // istiod first: no cacerts yet, so its own self-signed CA (and no file watcher).
    let istiod = fed
        .start_istiod_version("cluster-1", "cluster.local", version)
        .await;
    assert_eq!(istiod.ca_mode(), Some(CaMode::SelfSigned));
    assert!(!istiod.current_log().contains("Added cacerts files watcher"));
    let before = workload(&cluster, &istiod, NS, SA).await;
    assert_eq!(
        before.cert().chain().len(),
        1,
        "a self-signed CA sends no chain"
    );
    let self_signed_root = before.cert().roots()[0].to_vec();
    let pid = istiod.pid();

    // Then the federation: the agent installs cacerts and, since istiod cannot pick it up,
    // bumps the Deployment's pod template; the Deployment-controller stand-in restarts istiod.
    fed.join("cluster-1");
    fed.start_serve(&[]);
    fed.start_agent("cluster-1");
    fed.wait_healthy(&["cluster-1"], Duration::from_secs(90))
        .await;
    wait_for(
        "istiod to be restarted",
        Duration::from_secs(60),
        || async { (istiod.restarts() == 1 && istiod.ca_mode().is_some()).then_some(()) },
    )
    .await;
    assert_ne!(istiod.pid(), pid);
    assert_eq!(
        istiod.ca_mode(),
        Some(CaMode::PlugIn),
        "{}",
        istiod.current_log()
    );
    figure(
        &format!("istiod {version} self-signed to plug-in restart, ready in"),
        format!("{:?}", istiod.ready_in()),
    );
    let deployments: Api<Deployment> =
        Api::namespaced(cluster.client().await.unwrap(), names::ISTIO_NAMESPACE);
    let annotations = deployments
        .get(names::ISTIOD_DEPLOYMENT)
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert!(annotations.contains_key(names::RESTARTED_AT_ANNOTATION));
    let report = wait_for(
        "the agent to report the restart and istiod publishing the bundle",
        Duration::from_secs(30),
        || async {
            let ct = fed.cluster_trust("cluster-1").await?;
            let generation = ct.spec.bundle_generation;
            let st = ct.status?.istiod?;
            (st.state == IstiodState::Restarted
                && st.published_bundle_generation == Some(generation))
            .then_some(st)
        },
    )
    .await;
    assert!(reports(report.version.as_ref(), version), "{report:?}");
    assert!(report.message.contains("self-signed"), "{report:?}");

    // Now it issues from the agent's cluster CA, under the federation root, and publishes
    // the federation's bundle instead of its old self-signed root.
    let after = wait_for(
        "the federation bundle to be published",
        Duration::from_secs(60),
        || {
            let cluster = cluster.clone();
            let istiod = istiod.clone();
            let self_signed_root = self_signed_root.clone();
            async move {
                let w = workload(&cluster, &istiod, NS, SA).await;
                (w.trust()
                    .iter()
                    .all(|r| r.as_ref() != self_signed_root.as_slice()))
                .then_some(w)
            }
        },
    )
    .await;
    let chain = after.cert().chain_der();
    assert_eq!(chain[1], cluster_ca(&fed, "cluster-1").await);
    assert_eq!(
        chain.last(),
        Some(&federation_root(&fed, "cluster-1", "cluster.local").await)
    );
    // A workload still holding the self-signed certificate is no longer trusted.
    assert_no_mtls(&before, &after).await;
    let peer = workload(&cluster, &istiod, NS, "peer").await;
    assert_mtls(&after, &peer).await;
    assert_eq!(istiod.restarts(), 1, "exactly one restart");
    figure(
        &format!("istiod {version} self-signed test duration"),
        format!("{:.1?}", started.elapsed()),
    );
}

/// The root comparison of istiod `version`, checked against the real istiod without the
/// agent: plug-in `cacerts` with roots A‖B, then each change of `root-cert.pem` is written
/// directly and istiod's log says whether it took it. Each outcome must be what
/// `IstiodRules::root_update` predicts for that version.
pub async fn root_comparison(version: &str) {
    use federator_core::ca::{IssuingCa, RootOptions};
    use federator_core::csr::{CsrInfo, generate_cluster_csr};
    use federator_core::identity::{ClusterName, TrustDomain};
    use federator_core::key::KeyAlgorithm;
    use federator_core::policy::{ClusterCaRequest, SigningPolicy};
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{ObjectMeta, PostParams};

    let rules = rules(version);
    let tb = testbed::Testbed::start(testbed::TestbedOptions::clusters(1))
        .await
        .unwrap();
    let cluster = tb.cluster("cluster-1").unwrap().clone();
    let now = time::OffsetDateTime::now_utc();
    let root = |cn: &str| {
        IssuingCa::create_root(
            &RootOptions {
                common_name: cn.to_owned(),
                ..RootOptions::default()
            },
            now,
        )
        .unwrap()
    };
    let (a, b, c, d) = (root("A"), root("B"), root("C"), root("D"));
    let td = TrustDomain::new("cluster.local").unwrap();
    let name = ClusterName::new("cluster-1").unwrap();
    let (key, csr) = generate_cluster_csr(&name, &td, KeyAlgorithm::EcdsaP256).unwrap();
    let issued = SigningPolicy::default()
        .sign(
            &a,
            &CsrInfo::parse(csr.as_bytes()).unwrap(),
            &ClusterCaRequest {
                cluster: name,
                trust_domain: td,
            },
            now,
        )
        .unwrap();
    let files = |roots: &[&IssuingCa]| -> BTreeMap<String, k8s_openapi::ByteString> {
        let chain =
            federator_core::cert::parse_pem_certificates(issued.chain_pem.as_bytes(), "chain")
                .unwrap();
        let root_pem: String = roots.iter().map(|r| r.cert_pem()).collect();
        [
            (
                cacerts::CA_CERT,
                federator_core::cert::to_pem([chain[0].as_slice()]),
            ),
            (cacerts::CA_KEY, key.to_pkcs8_pem()),
            (cacerts::CERT_CHAIN, issued.chain_pem.clone()),
            (cacerts::ROOT_CERT, root_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.into_bytes())))
        .collect()
    };
    let client = cluster.client().await.unwrap();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(names::ISTIO_NAMESPACE.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, names::ISTIO_NAMESPACE);
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(names::CACERTS_SECRET.into()),
            ..ObjectMeta::default()
        },
        data: Some(files(&[&a, &b])),
        ..Secret::default()
    };
    secret = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let istiod = tb
        .start_istiod(
            "cluster-1",
            testbed::IstiodOptions::new("cluster.local").version(version),
        )
        .await
        .unwrap();
    assert_eq!(istiod.ca_mode(), Some(CaMode::PlugIn));

    // Each step rewrites root-cert.pem from the roots istiod holds now (what it accepted
    // last), so every step is what its name says on every version.
    type Step = fn(&[&'static str]) -> Vec<&'static str>;
    let steps: [(&str, Step); 5] = [
        ("append C", |held| [held, &["C"][..]].concat()),
        ("drop the middle root", |held| {
            let mut v = held.to_vec();
            v.remove(v.len() / 2);
            v
        }),
        ("the same roots reordered", |held| {
            held.iter().rev().copied().collect()
        }),
        ("add D and drop another root at once", |held| {
            let drop = held.iter().position(|r| *r != "A").unwrap_or(0);
            let mut v = held.to_vec();
            v.remove(drop);
            v.push("D");
            v
        }),
        ("keep only the first root A", |_| vec!["A"]),
    ];
    let by_name: BTreeMap<&str, &IssuingCa> = [("A", &a), ("B", &b), ("C", &c), ("D", &d)].into();
    let pem = |roots: &[&str]| -> String { roots.iter().map(|r| by_name[r].cert_pem()).collect() };
    let mut held: Vec<&'static str> = vec!["A", "B"];
    for (what, step) in steps {
        let roots = step(&held);
        let new = pem(&roots);
        let expected = rules.root_update(true, pem(&held).as_bytes(), new.as_bytes());
        let (accepted0, ignored0) = (roots_accepted(&istiod), istiod.log_count(LOG_ROOT_IGNORED));
        let written: Vec<&IssuingCa> = roots.iter().map(|r| by_name[r]).collect();
        secret.data = Some(files(&written));
        secret.metadata.managed_fields = None;
        secret = secrets
            .replace(names::CACERTS_SECRET, &PostParams::default(), &secret)
            .await
            .unwrap();
        let outcome = wait_for(
            &format!("istiod {version} to handle {what}"),
            Duration::from_secs(30),
            || async {
                let accepted = roots_accepted(&istiod) > accepted0;
                let ignored = istiod.log_count(LOG_ROOT_IGNORED) > ignored0;
                match (accepted, ignored) {
                    (true, false) => Some(RootUpdate::Accepted),
                    (false, true) => Some(RootUpdate::Ignored(String::new())),
                    (true, true) => panic!("istiod {version} both took and refused {what}"),
                    (false, false) => None,
                }
            },
        )
        .await;
        let expected_accepted = matches!(expected, RootUpdate::Accepted);
        assert_eq!(
            matches!(outcome, RootUpdate::Accepted),
            expected_accepted,
            "istiod {version}, {what} ({} -> {}): real istiod {outcome:?}, rules {expected:?}",
            held.concat(),
            roots.concat()
        );
        eprintln!(
            "[matrix] istiod {version}: {} -> {} ({what}): {}",
            held.concat(),
            roots.concat(),
            if expected_accepted {
                "hot reload"
            } else {
                "ignored"
            }
        );
        if expected_accepted {
            held = roots;
            // The published bundle follows.
            let n = held.len();
            wait_for(
                &format!("istiod {version} to publish {n} roots after {what}"),
                Duration::from_secs(30),
                || async {
                    let p = published_roots(&cluster, names::ISTIO_NAMESPACE).await?;
                    (pem_count(&p) == n).then_some(())
                },
            )
            .await;
        }
    }
    assert_eq!(istiod.restarts(), 0);
}

/// A federation whose members run different istiod versions (`versions`, one member each,
/// alternating between two trust domains), as during an upgrade: every pair trusts each
/// other; a root rotation waits while one member's istiod does not publish the new root
/// (status names it), and its final removal from the middle of `root-cert.pem` restarts
/// exactly the members whose version needs it.
pub async fn mixed(versions: &[&str]) {
    let started = Instant::now();
    let names: Vec<String> = (1..=versions.len())
        .map(|i| format!("cluster-{i}"))
        .collect();
    let members: Vec<(&str, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.as_str(),
                if i % 2 == 0 {
                    "cluster.local"
                } else {
                    "east.example"
                },
            )
        })
        .collect();
    let version_of: BTreeMap<String, &str> = names
        .iter()
        .cloned()
        .zip(versions.iter().copied())
        .collect();
    let mut fed = Federation::start_on("cluster-1", &members, &[], None).await;
    for (name, _) in &members {
        fed.join(name);
        fed.install_mesh_config(name).await;
    }
    fed.start_serve(&[]);
    for (name, _) in &members {
        fed.start_agent(name);
    }
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    fed.wait_healthy(&all, Duration::from_secs(120)).await;
    let mut istiods: BTreeMap<String, Istiod> = BTreeMap::new();
    for (name, td) in &members {
        let v = version_of[*name];
        let i = fed.start_istiod_version(name, td, v).await;
        assert_eq!(i.ca_mode(), Some(CaMode::PlugIn), "{name} ({v})");
        istiods.insert((*name).to_owned(), i);
    }
    for (name, _) in &members {
        istiod_report(&fed, name, version_of[*name]).await;
    }
    fed.wait_healthy(&all, Duration::from_secs(60)).await;
    let clusters: BTreeMap<String, Cluster> = members
        .iter()
        .map(|(n, _)| ((*n).to_owned(), fed.members[*n].cluster.clone()))
        .collect();
    let before = fresh_workloads(&clusters, &istiods, SA).await;
    all_pairs_trust(&before).await;
    figure(
        &format!("mixed federation {versions:?} trusted after"),
        format!("{:.1?}", started.elapsed()),
    );

    // The oldest member's istiod is down when the rotation starts: the rotation must not move
    // on to re-signing until it publishes the new root, and its status says why.
    let oldest = names.last().unwrap().clone();
    let oldest_td = members.last().unwrap().1;
    istiods[&oldest].stop().await;
    let rotated = trust_domain_of_last_root(&fed, "cluster-1").await;
    let initial_roots = fed.cacerts("cluster-1").await.unwrap()[cacerts::ROOT_CERT].clone();
    let generation = fed.federation_status().await.bundle_generation;
    fed.federator_ok(&["rotate-root", "--trust-domain", &rotated, "--drain", "3s"]);
    let waits_only_for_oldest = |r: &RotationStatus| {
        r.phase == RotationPhase::TrustingNewRoot
            && !r.waiting_for.is_empty()
            && r.waiting_for
                .iter()
                .all(|w| w.member == oldest && w.reason == WaitReason::IstiodBehind)
    };
    let waiting = wait_for(
        "the rotation to wait for the stopped istiod, and only for it",
        Duration::from_secs(60),
        || async {
            let st = fed.federation_status().await;
            let r = st.rotations.iter().find(|r| r.trust_domain == rotated)?;
            (st.bundle_generation > generation && waits_only_for_oldest(r))
                .then(|| r.waiting_for.clone())
        },
    )
    .await;
    eprintln!("[status] rotation waiting for: {waiting:?}");
    assert!(
        waiting[0].message.contains(version_of[&oldest]),
        "the wait names the istiod version: {waiting:?}"
    );
    // An operator sees it as an event on the Federation, too.
    let hub = fed.hub.client().await.unwrap();
    let note = wait_for(
        "a RotationWaitsForIstiod event naming the stopped istiod",
        Duration::from_secs(30),
        || async {
            events_about(&hub, "Federation", names::FEDERATION)
                .await
                .into_iter()
                .find(|(reason, note)| {
                    reason == "RotationWaitsForIstiod"
                        && note.contains(&format!("istiod of {oldest}:"))
                        && note.contains(version_of[&oldest])
                })
        },
    )
    .await;
    eprintln!("[event] {note:?}");
    // It keeps waiting, and `federator status` says so (and exits 1: a member is behind).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = fed.federation_status().await;
    let r = st
        .rotations
        .iter()
        .find(|r| r.trust_domain == rotated)
        .unwrap();
    assert!(waits_only_for_oldest(r), "{r:?}");
    let out = fed.federator(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("waiting for {oldest} (istiod-behind):")),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    // Back up (a new pod): it loads the bundle with both roots; the rotation proceeds.
    let restarted = fed
        .start_istiod_version(&oldest, oldest_td, version_of[&oldest])
        .await;
    istiods.insert(oldest.clone(), restarted);
    let restarts_before: BTreeMap<String, u32> = istiods
        .iter()
        .map(|(n, i)| (n.clone(), i.restarts()))
        .collect();
    let t = Instant::now();
    let (phases, _) = follow_rotation(&fed, &rotated).await;
    wait_published_count(&clusters, 2, "old root dropped").await;
    figure(
        &format!("mixed federation {versions:?}: rotation after the istiod came back"),
        format!("{:.1?} (phases {phases:?})", t.elapsed()),
    );
    // What each member's istiod saw in the last step: the bundle with the new root appended,
    // then without the old one. Whether that needs a restart is the version's rule.
    let final_roots = fed.cacerts("cluster-1").await.unwrap()[cacerts::ROOT_CERT].clone();
    let initial_set =
        federator_core::cert::parse_pem_certificates(&initial_roots, "roots").unwrap();
    let added: Vec<Vec<u8>> = federator_core::cert::parse_pem_certificates(&final_roots, "roots")
        .unwrap()
        .into_iter()
        .filter(|r| !initial_set.contains(r))
        .collect();
    assert_eq!(added.len(), 1, "one new root");
    let mut before_drop = initial_roots.clone();
    before_drop.extend(federator_core::cert::to_pem([added[0].as_slice()]).into_bytes());
    for (name, i) in &istiods {
        let v = version_of[name];
        let needs_restart = matches!(
            rules(v).root_update(true, &before_drop, &final_roots),
            RootUpdate::Ignored(_)
        );
        eprintln!(
            "[matrix] mixed: {name} ({v}) dropping the old root needs a restart: {needs_restart}"
        );
        wait_restarts(i, restarts_before[name] + u32::from(needs_restart)).await;
        assert_eq!(
            i.restarts() - restarts_before[name],
            u32::from(needs_restart),
            "{name} ({v}): restarts for dropping the old root"
        );
    }
    fed.wait_healthy(&all, Duration::from_secs(60)).await;
    for (name, _) in &members {
        let m = fed.member_cluster(name).await.unwrap().status.unwrap();
        assert!(
            reports(m.istiod_version.as_ref(), version_of[*name]),
            "{name}: {:?}",
            m.istiod_version
        );
    }
    let after = fresh_workloads(&clusters, &istiods, "after").await;
    all_pairs_trust(&after).await;
    // Certificates of the rotated trust domain from before the rotation are refused now.
    for (name, td) in &members {
        if *td == rotated {
            let old = with_current_trust(&before[*name], &clusters[*name], NS).await;
            let peer = names.iter().find(|n| n.as_str() != *name).unwrap();
            assert_no_mtls(&old, &after[peer]).await;
        }
    }
    figure(
        &format!("mixed federation {versions:?} test duration"),
        format!("{:.1?}", started.elapsed()),
    );
}
