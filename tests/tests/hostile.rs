//! A compromised member (docs/security.md, "A compromised member"): the test stops c2's agent
//! and plays it with the agent's own identity (the kubeconfig `join` wrote), writing whatever
//! that identity may write, while c1 stays honest. It proves that c2 cannot:
//!
//! - obtain a CA for another trust domain, another name, a longer path, other key usages, an
//!   EKU, or a non-CA certificate (each CSR refused with the reason on the hub);
//! - get the policy to copy anything but the public key (a CSR naming c1 is signed as c2's);
//! - stall the hub with huge or malformed CSRs, a flood of CSRs (the signing budget stops it
//!   at the burst) or thousands of status updates: c1's re-issue goes through meanwhile;
//! - bloat the hub's objects with its own problems (the hub mirrors 16, each cut at 512
//!   characters);
//! - reach the hub or c1 with its identity, or write anything in c1 with the reader
//!   credential of c1 it holds;
//! - make the hub write anything into c1 or the hub beyond c2's own `MemberCluster`.
//!
//! Then c2's real agent starts again and c2 recovers on its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use federator_api::member::{ClusterTrust, CsrStatus};
use federator_api::names;
use federator_core::csr::CsrInfo;
use federator_e2e::snapshot::{Snapshotter, changes};
use federator_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The CSR fields the policy grants c2, changed by `f`, signed by a fresh key (PEM).
fn csr(f: impl FnOnce(&mut CertificateParams)) -> String {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "c2 intermediate CA");
    p.subject_alt_names = vec![SanType::URI("spiffe://c2.example".try_into().unwrap())];
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    f(&mut p);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn digest(pem: &str) -> String {
    CsrInfo::parse(pem.as_bytes()).unwrap().digest()
}

/// c2's `ClusterTrust`, through the attacker's (the agent's) identity.
struct Attacker {
    trusts: Api<ClusterTrust>,
}

impl Attacker {
    async fn current(&self) -> ClusterTrust {
        self.trusts.get(names::CLUSTER_TRUST).await.unwrap()
    }

    /// Publishes `pem` (with `digest`) as the CSR of the current generation.
    async fn publish(&self, pem: &str, digest: &str) {
        self.try_publish(pem, digest).await.unwrap();
    }

    async fn try_publish(&self, pem: &str, digest: &str) -> Result<(), kube::Error> {
        let generation = self.current().await.spec.csr_generation;
        let csr = CsrStatus {
            generation,
            pem: pem.to_owned(),
            digest: digest.to_owned(),
        };
        self.trusts
            .patch_status(
                names::CLUSTER_TRUST,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": { "csr": csr } })),
            )
            .await
            .map(|_| ())
    }
}

/// Waits until c2's problems on the hub mention `piece`; returns them.
async fn hub_says(fed: &Federation, piece: &str) -> Vec<String> {
    hub_says_where(fed, piece, |x| x.contains(piece)).await
}

/// Waits until one of c2's problems on the hub satisfies `what` (described by `description`).
async fn hub_says_where(
    fed: &Federation,
    description: &str,
    what: impl Fn(&str) -> bool,
) -> Vec<String> {
    wait_for(
        &format!("the hub to report c2's problem {description:?}"),
        Duration::from_secs(60),
        || async {
            let p = fed.member_cluster("c2").await?.status?.problems;
            p.iter().any(|x| what(x)).then_some(p)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_member_gets_nothing_beyond_its_own_cluster_ca() {
    let members = [("c1", "cluster.local"), ("c2", "c2.example")];
    let mut fed = Federation::start(&members, &[]).await;
    fed.join_all_and_serve(false).await;
    // c2 is compromised: its agent stops, the attacker holds its identity.
    fed.agent_process("c2").kill();
    let attacker_client = testbed::cluster::client_from_file(&fed.members["c2"].agent_kubeconfig)
        .await
        .unwrap();
    let attacker = Attacker {
        trusts: Api::namespaced(attacker_client.clone(), names::NAMESPACE),
    };
    let signed_before = attacker.current().await.spec.signed.unwrap();
    let watch = fed.watch_cacerts(&members, Duration::from_millis(200));
    let mut clients = vec![("hub".to_owned(), fed.hub.client().await.unwrap())];
    clients.push((
        "c1".to_owned(),
        fed.members["c1"].cluster.client().await.unwrap(),
    ));
    let snap = Snapshotter::new(clients).await;
    let before = snap.take().await;

    // 1. CSRs asking for more than the policy grants: each is refused with its reason, and
    // nothing is signed.
    type Change = Box<dyn FnOnce(&mut CertificateParams)>;
    let refused: Vec<(&str, Change)> = vec![
        (
            "asks for trust domain cluster.local",
            Box::new(|p| {
                p.subject_alt_names =
                    vec![SanType::URI("spiffe://cluster.local".try_into().unwrap())]
            }),
        ),
        (
            "asks for the URI SAN spiffe://c2.example/ns/istio-system/sa/istiod",
            Box::new(|p| {
                p.subject_alt_names.push(SanType::URI(
                    "spiffe://c2.example/ns/istio-system/sa/istiod"
                        .try_into()
                        .unwrap(),
                ))
            }),
        ),
        (
            "asks for the DNS name istiod.c1.example",
            Box::new(|p| {
                p.subject_alt_names
                    .push(SanType::DnsName("istiod.c1.example".try_into().unwrap()))
            }),
        ),
        (
            "asks for path length 3",
            Box::new(|p| p.is_ca = IsCa::Ca(BasicConstraints::Constrained(3))),
        ),
        (
            "asks for an unlimited path length",
            Box::new(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
        ),
        (
            "asks for a non-CA certificate",
            Box::new(|p| p.is_ca = IsCa::ExplicitNoCa),
        ),
        (
            "asks for key usage keyEncipherment",
            Box::new(|p| p.key_usages.push(KeyUsagePurpose::KeyEncipherment)),
        ),
        (
            "asks for extended key usage",
            Box::new(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]),
        ),
    ];
    for (reason, change) in refused {
        let pem = csr(change);
        attacker.publish(&pem, &digest(&pem)).await;
        hub_says(&fed, reason).await;
        assert_eq!(
            attacker.current().await.spec.signed.unwrap().serial,
            signed_before.serial,
            "{reason}: nothing signed"
        );
    }

    // 2. Malformed and huge CSRs: refused, nothing signed.
    let good = csr(|_| {});
    attacker.publish(&good, &"0".repeat(64)).await;
    hub_says(&fed, "digest does not match").await;
    attacker
        .publish(
            "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n",
            "00",
        )
        .await;
    let said = hub_says_where(&fed, "an unreadable CSR not signed", |x| {
        x.contains("not signed") && !x.contains("digest")
    })
    .await;
    eprintln!("an empty CSR: {said:?}");
    // Over the hub's limit: the API server refuses it already (the CRD's maxLength).
    let huge = format!("{good}{}", "A".repeat(1 << 20));
    let err = attacker
        .try_publish(&huge, &digest(&good))
        .await
        .unwrap_err();
    assert!(federator_api::plumbing::is_status(&err, 422), "{err}");
    assert!(err.to_string().contains("65536"), "{err}");
    assert_eq!(
        attacker.current().await.spec.signed.unwrap().serial,
        signed_before.serial
    );

    // 3. A CSR naming c1 in its subject is signed with the policy's fields: c2's.
    let pem = csr(|p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "c1 intermediate CA");
        p.distinguished_name.push(DnType::LocalityName, "c1");
        p.distinguished_name
            .push(DnType::OrganizationName, "cluster.local");
    });
    let d = digest(&pem);
    attacker.publish(&pem, &d).await;
    let signed = wait_for(
        "the CSR naming c1 to be signed",
        Duration::from_secs(60),
        || async {
            attacker
                .current()
                .await
                .spec
                .signed
                .filter(|s| s.csr_digest == d)
        },
    )
    .await;
    let ca = first_cert(signed.chain_pem.as_bytes());
    let info = federator_core::cert::CertInfo::from_der(&ca).unwrap();
    assert!(
        info.subject.contains("CN=c2 intermediate CA"),
        "{}",
        info.subject
    );
    assert!(info.subject.contains("L=c2"), "{}", info.subject);
    assert!(!info.subject.contains("c1"), "{}", info.subject);
    assert_eq!(info.uri_sans, ["spiffe://c2.example"]);
    assert!(info.dns_sans.is_empty());
    assert!(info.is_ca);
    assert_eq!(info.path_len, Some(0));
    assert_eq!(info.extended_key_usage, None);

    // 4. A flood of valid CSRs: the hub signs a burst, then holds back and says why.
    let started = Instant::now();
    let mut signed_in_flood = 0;
    for i in 0..40 {
        let pem = csr(|_| {});
        let d = digest(&pem);
        attacker.publish(&pem, &d).await;
        let outcome = wait_for(
            &format!("CSR {i} of the flood to be signed or held back"),
            Duration::from_secs(60),
            || async {
                if attacker
                    .current()
                    .await
                    .spec
                    .signed
                    .is_some_and(|s| s.csr_digest == d)
                {
                    return Some(true);
                }
                let p = fed.member_cluster("c2").await?.status?.problems;
                p.iter()
                    .any(|x| x.contains("cluster CAs signed in a row"))
                    .then_some(false)
            },
        )
        .await;
        if !outcome {
            break;
        }
        signed_in_flood += 1;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    eprintln!("flood: {signed_in_flood} CSRs signed in {flood_secs:.1} s, then held back");
    // The burst (less the one CSR of step 3), plus at most what refilled meanwhile.
    let refilled = (flood_secs / 6.0).ceil() as usize;
    assert!(
        (8..=9 + refilled).contains(&signed_in_flood),
        "{signed_in_flood} signed in {flood_secs:.1} s"
    );

    // 5. Thousands of status updates while c1's CA is re-issued: c1 is not held up.
    let storm = {
        let trusts = attacker.trusts.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            let started = Instant::now();
            let patches = futures::stream::iter(0..2000).map(|i| {
                let trusts = trusts.clone();
                async move {
                    let body = serde_json::json!({"status": {"problems": [format!("noise {i}")]}});
                    trusts
                        .patch_status(
                            names::CLUSTER_TRUST,
                            &PatchParams::default(),
                            &Patch::Merge(body),
                        )
                        .await
                        .is_ok()
                }
            });
            use futures::StreamExt;
            let results: Vec<bool> = patches.buffer_unordered(8).collect().await;
            sent += results.iter().filter(|ok| **ok).count();
            (sent, started.elapsed())
        })
    };
    // c1's re-issue starts once the storm is under way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let renew_started = Instant::now();
    fed.federator_ok(&["renew", "cluster", "c1", "--now", "--timeout", "60s"]);
    let renew_took = renew_started.elapsed();
    let (sent, storm_took) = storm.await.unwrap();
    eprintln!(
        "storm: {sent} status updates in {:.1} s; c1's re-issue took {:.1} s meanwhile",
        storm_took.as_secs_f64(),
        renew_took.as_secs_f64()
    );
    assert!(sent >= 1900, "{sent} status updates went through");
    assert!(
        renew_took < Duration::from_secs(30),
        "c1's re-issue took {renew_took:?}"
    );
    assert!(fed.serve.as_mut().unwrap().is_running(), "the hub is up");

    // A status with 500 problems of 1 KiB each: the hub mirrors 16, cut at 512 characters.
    let noise: Vec<String> = (0..500)
        .map(|i| format!("{i:04}{}", "x".repeat(1020)))
        .collect();
    attacker
        .trusts
        .patch_status(
            names::CLUSTER_TRUST,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"problems": noise}})),
        )
        .await
        .unwrap();
    let mirrored = hub_says(&fed, "484 more problems").await;
    let from_agent: Vec<&String> = mirrored.iter().filter(|p| p.contains("xxx")).collect();
    assert_eq!(from_agent.len(), 16, "{mirrored:?}");
    assert!(from_agent.iter().all(|p| p.chars().count() <= 513));
    let bytes: usize = mirrored.iter().map(String::len).sum();
    eprintln!("500 problems (512 KB) in c2's status: {bytes} bytes of them on the hub");

    // 6. What c2's identities reach: nothing on the hub or in c1 with the agent's token, and
    // nothing to write in c1 with the reader credential of c1 that c2 was handed.
    for (cluster, kubeconfig) in [
        ("hub", fed.hub.kubeconfig_path().to_owned()),
        ("c1", fed.members["c1"].cluster.kubeconfig_path().to_owned()),
    ] {
        let yaml = std::fs::read_to_string(&fed.members["c2"].agent_kubeconfig).unwrap();
        let token = yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        let server_yaml = std::fs::read_to_string(&kubeconfig).unwrap();
        let client = testbed::cluster::client_from_yaml(&with_token(&server_yaml, &token))
            .await
            .unwrap();
        let err = Api::<Secret>::namespaced(client, names::NAMESPACE)
            .list(&Default::default())
            .await
            .unwrap_err();
        assert!(
            federator_api::plumbing::is_status(&err, 401),
            "c2's agent token at {cluster}: {err}"
        );
    }
    let peers: Api<Secret> = Api::namespaced(attacker_client.clone(), names::NAMESPACE);
    let c1_reader = peers.get(names::PEERS_SECRET).await.unwrap().data.unwrap()["c1"]
        .0
        .clone();
    let reader = testbed::cluster::client_from_yaml(std::str::from_utf8(&c1_reader).unwrap())
        .await
        .unwrap();
    for (verb, resource, ns) in [
        ("create", "secrets", Some(names::ISTIO_NAMESPACE)),
        ("update", "secrets", Some(names::ISTIO_NAMESPACE)),
        ("delete", "secrets", Some(names::ISTIO_NAMESPACE)),
        (
            "patch",
            "clustertrusts.federator.io",
            Some(names::NAMESPACE),
        ),
        ("create", "serviceaccounts/token", Some(names::NAMESPACE)),
        ("create", "pods", Some("default")),
        ("patch", "configmaps", Some(names::ISTIO_NAMESPACE)),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", None),
    ] {
        assert!(
            !allowed(&reader, verb, resource, ns, None).await,
            "c1's reader may {verb} {resource} in {ns:?}"
        );
    }
    // What it may read is what Istio's own reader may (docs/security.md): Secrets included.
    assert!(
        allowed(
            &reader,
            "get",
            "secrets",
            Some(names::ISTIO_NAMESPACE),
            Some(names::CACERTS_SECRET)
        )
        .await
    );

    // 7. Through all of it, the hub wrote nothing into c1, and nothing on the hub but c2's
    // MemberCluster (status, and the re-issue annotation of c1's). c1's own re-issue (step 5)
    // changed c1's ClusterTrust, agent Secret and cacerts, and its MemberCluster.
    let after = snap.take().await;
    let expected_in_c1 = [
        format!(
            "c1 ClusterTrust.federator.io {}/{}",
            names::NAMESPACE,
            names::CLUSTER_TRUST
        ),
        format!(
            "c1 Secret. {}/{}",
            names::NAMESPACE,
            names::AGENT_KEY_SECRET
        ),
        format!(
            "c1 Secret. {}/{}",
            names::ISTIO_NAMESPACE,
            names::CACERTS_SECRET
        ),
    ];
    let unexpected: Vec<String> = changes(&before, &after)
        .into_iter()
        .filter(|c| {
            let key = c.split_once(' ').unwrap().1;
            !(key.starts_with("hub MemberCluster.federator.io federator-system/")
                || expected_in_c1.iter().any(|e| e == key))
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");

    // c2's own agent comes back and recovers: its key, a CA the hub signs for it, cacerts.
    fed.start_agent("c2");
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(90))
        .await;
    federator_e2e::crash::wait_agreement(&fed, "c2", Duration::from_secs(60)).await;
    check_trust(&fed, &members).await;
    let report = watch.stop().await;
    eprintln!("trust checked {} times", report.rounds);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
}

/// `kubeconfig` with its user's credential replaced by `token`.
fn with_token(kubeconfig: &str, token: &str) -> String {
    let mut v: serde_yaml::Value = serde_yaml::from_str(kubeconfig).unwrap();
    for user in v["users"].as_sequence_mut().unwrap() {
        user["user"] = serde_yaml::to_value(serde_json::json!({ "token": token })).unwrap();
    }
    serde_yaml::to_string(&v).unwrap()
}
