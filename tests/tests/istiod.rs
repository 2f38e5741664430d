//! The proof with real istiod: Istio accepts the CA the agents install, and workloads of
//! different clusters trust each other — through Istio's own CA service and a real mutual-TLS
//! handshake, not by inspecting Secrets.
//!
//! Three members (cluster-1 and cluster-2 in `cluster.local`, cluster-3 in `east.example`),
//! the hub in cluster-1, and a fourth cluster outside the federation; one istiod
//! (`pilot-discovery`) per cluster. Workloads get their certificates from their own istiod
//! (`IstioCertificateService/CreateCertificate`, ServiceAccount token for `istio-ca`) and
//! trust only the `istio-ca-root-cert` their own istiod published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use federator_api::member::ClusterTrust;
use federator_api::names;
use federator_core::cacerts;
use federator_e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use mtls::{SpiffeVerifier, Workload};
use rustls_pki_types::{CertificateDer, UnixTime};
use testbed::Istiod;
use testbed::istiod::{CaMode, LOG_HOT_RELOAD};

const MEMBERS: [(&str, &str); 3] = [
    ("cluster-1", "cluster.local"),
    ("cluster-2", "cluster.local"),
    ("cluster-3", "east.example"),
];
const OUTSIDER: &str = "outsider";
const NS: &str = "web";
const SA: &str = "web";

fn figure(what: &str, value: impl std::fmt::Display) {
    eprintln!("[figure] {what}: {value}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_proves_the_federation() {
    let started = Instant::now();
    let mut fed = Federation::start_with_outsiders("cluster-1", &MEMBERS, &[OUTSIDER], &[]).await;
    for (name, _) in MEMBERS {
        fed.join(name);
        fed.install_mesh_config(name).await;
    }
    fed.start_serve(&[]);
    for (name, _) in MEMBERS {
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
    let mut istiods: BTreeMap<&str, Istiod> = BTreeMap::new();
    for (name, td) in MEMBERS {
        let i = fed.start_istiod(name, td).await;
        assert_eq!(
            i.ca_mode(),
            Some(CaMode::PlugIn),
            "{name}: {}",
            i.current_log()
        );
        assert!(i.current_log().contains("Added cacerts files watcher"));
        istiods.insert(name, i);
    }
    let outsider = fed.start_istiod(OUTSIDER, "cluster.local").await;
    assert_eq!(outsider.ca_mode(), Some(CaMode::SelfSigned));
    for (name, i) in istiods.iter().chain([(&OUTSIDER, &outsider)]) {
        figure(
            &format!("istiod {name} start-to-ready"),
            format!("{:?}", i.ready_in()),
        );
    }
    let clusters: BTreeMap<&str, testbed::Cluster> = MEMBERS
        .iter()
        .map(|(n, _)| (*n, fed.members[*n].cluster.clone()))
        .collect();
    let outsider_cluster = fed.testbed.cluster(OUTSIDER).unwrap().clone();

    // A workload certificate from each member's istiod chains through that member's cluster
    // CA (what the agent installed) to the federation root of its trust domain.
    let mut workloads: BTreeMap<&str, Workload> = BTreeMap::new();
    for (name, td) in MEMBERS {
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
        workloads.insert(name, w);
    }
    let outsider_w = workload(&outsider_cluster, &outsider, NS, SA).await;
    assert_eq!(
        outsider_w.id(),
        workloads["cluster-1"].id(),
        "same SPIFFE ID"
    );

    // Mutual TLS across clusters and trust domains, each side trusting only its own bundle.
    let t = Instant::now();
    assert_mtls(&workloads["cluster-1"], &workloads["cluster-3"]).await;
    figure(
        "mTLS handshake pair (both directions)",
        format!("{:?}", t.elapsed()),
    );
    assert_mtls(&workloads["cluster-2"], &workloads["cluster-3"]).await;
    assert_mtls(&workloads["cluster-1"], &workloads["cluster-2"]).await;
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
    let cts: Api<ClusterTrust> = Api::namespaced(
        clusters["cluster-1"].client().await.unwrap(),
        names::NAMESPACE,
    );
    let generation = cts
        .get(names::CLUSTER_TRUST)
        .await
        .unwrap()
        .spec
        .csr_generation;
    let bump = serde_json::json!({"spec": {"csrGeneration": generation + 1}});
    cts.patch(
        names::CLUSTER_TRUST,
        &PatchParams::default(),
        &Patch::Merge(&bump),
    )
    .await
    .unwrap();
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
        "renewal: CSR bump to istiod reload",
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
            let ct = cts.get(names::CLUSTER_TRUST).await.ok()?;
            (ct.status?.istiod?.state.to_string() == "hot-reload").then_some(())
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

    // cluster-3 leaves: its trust domain's root leaves the bundle of cluster-1 and cluster-2;
    // their istiods hot-reload the smaller root-cert.pem and publish it.
    let pids: BTreeMap<&str, Option<u32>> = istiods.iter().map(|(n, i)| (*n, i.pid())).collect();
    let t = Instant::now();
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
        assert_eq!(istiods[name].pid(), pids[name], "{name}: no restart");
        assert_eq!(istiods[name].restarts(), 0);
        // The multi-root path: a pure remove of roots is accepted.
        let log = istiods[name].log();
        assert!(
            log.lines().any(|l| l.ends_with("\tUpdating new ROOT-CA")),
            "{name}: no root update in istiod's log"
        );
        assert!(!log.contains("ROOT-CA not supported"), "{name}: {log}");
    }
    figure("leave to published bundles", format!("{:?}", t.elapsed()));
    let c1 = with_current_trust(&new_w, &clusters["cluster-1"], NS).await;
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
    let fresh = workload(&clusters["cluster-1"], i1, NS, SA).await;
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

    for (name, i) in istiods.iter().chain([(&OUTSIDER, &outsider)]) {
        figure(
            &format!("istiod {name} RSS"),
            format!("{} MiB", i.rss_kib().unwrap_or(0) / 1024),
        );
    }
    figure("test duration", format!("{:.1?}", started.elapsed()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_istiod_is_restarted_into_plug_in_mode() {
    let started = Instant::now();
    let mut fed =
        Federation::start_on("cluster-1", &[("cluster-1", "cluster.local")], &[], None).await;
    let cluster = fed.members["cluster-1"].cluster.clone();

    // istiod first: no cacerts yet, so its own self-signed CA (and no file watcher).
    let istiod = fed.start_istiod("cluster-1", "cluster.local").await;
    assert_eq!(istiod.ca_mode(), Some(CaMode::SelfSigned));
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
        "self-signed to plug-in restart, ready in",
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
    wait_for(
        "the agent to report the restart",
        Duration::from_secs(30),
        || async {
            let ct = fed.cluster_trust("cluster-1").await?;
            (ct.status?.istiod?.state.to_string() == "restarted").then_some(())
        },
    )
    .await;

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
    figure("test duration", format!("{:.1?}", started.elapsed()));
}
