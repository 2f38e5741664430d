//! The member reconcile against mocked API servers (one for the member, one for the hub),
//! pinning the exact calls it makes on each path. The end-to-end tests are the proof that it
//! works against real servers; these pin what it does when a server answers 401 or 404, or
//! when a CSR is refused or signed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use federator_api::hub::{MemberCluster, MemberClusterSpec};
use federator_api::member::{ClusterTrust, ClusterTrustSpec, ClusterTrustStatus, CsrStatus};
use federator_core::csr::CsrInfo;
use federator_testkit::{exchange, pki};
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{Member, reconcile};
use crate::hub::member_access::StoredCredential;
use crate::hub::plan::federation::Desired;
use crate::hub::serve::metrics::Metrics;
use crate::hub::serve::{ServeOptions, Shared};
use crate::hub::trust::signer::{LocalRoots, Signer};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const TD: &str = "a.local";
const HEARTBEAT: Duration = Duration::from_secs(300);
const TRUST: &str = "/apis/federator.io/v1alpha1/namespaces/federator-system/clustertrusts/local";
const MEMBER: &str = "/apis/federator.io/v1alpha1/namespaces/federator-system/memberclusters/c1";
const CREDENTIAL: &str = "/api/v1/namespaces/federator-system/secrets/federator-member-c1";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/federator-system/events";

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason,
           "reason": reason, "code": code})
}

/// Waits for the next request, checks its method and path, answers, and returns its body.
async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
    code: u16,
    answer: Value,
) -> Value {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request; expected {method} {path}"))
        .expect("the client is gone");
    assert_eq!(
        (request.method(), request.uri().path()),
        (&method, path),
        "unexpected request"
    );
    let body = request.into_body().collect_bytes().await.unwrap();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    let answer = if answer.is_null() {
        body.clone()
    } else {
        answer
    };
    send.send_response(
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    body
}

/// Asserts that no further request comes.
async fn expect_nothing(handle: &mut Handle) {
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        panic!(
            "unexpected request {} {}",
            request.method(),
            request.uri().path()
        );
    }
}

struct Fixture {
    member: Arc<Member>,
    hub: Handle,
    cluster: Handle,
    root: federator_core::ca::IssuingCa,
}

fn fixture(signer_loaded: bool) -> Fixture {
    let (hub_client, hub) = mock();
    let (member_client, cluster) = mock();
    let root = pki::root("a root");
    let shared = Arc::new(Shared::new(
        hub_client,
        ServeOptions {
            leader_elect: false,
            identity: "test".into(),
            heartbeat: HEARTBEAT,
            metrics_addr: None,
        },
        Arc::new(Metrics::default()),
    ));
    shared.desired.send_replace(Desired {
        bundle: vec![exchange::bundle_entry(TD, &root)],
        bundle_generation: 1,
        key_algorithm: "ecdsa-p256".into(),
        renew_at_percent: 50,
        cluster_ca_ttl: Duration::from_secs(3600),
        signing_roots: [(
            TD.to_owned(),
            federator_core::cert::fingerprint(root.root_der()),
        )]
        .into(),
        resign: Default::default(),
    });
    if signer_loaded {
        let mut roots = LocalRoots::default();
        roots.active.insert(
            pki::td(TD),
            federator_core::ca::IssuingCa::import(
                root.cert_pem().as_bytes(),
                root.key().to_pkcs8_pem().as_bytes(),
                pki::now(),
            )
            .unwrap(),
        );
        shared.set_signer(Arc::new(Signer::Local(roots)));
    }
    let member = Arc::new(Member {
        shared,
        name: "c1".into(),
        spec: member_spec(),
        client: member_client,
        credential: StoredCredential {
            kubeconfig: "in use".to_owned().into(),
            issued: None,
            expires: None,
        },
        last_seen: Mutex::new(None),
        reload: Arc::new(Notify::new()),
        failures: Default::default(),
    });
    Fixture {
        member,
        hub,
        cluster,
        root,
    }
}

fn member_spec() -> MemberClusterSpec {
    MemberClusterSpec {
        trust_domain: TD.into(),
        credential_secret: "federator-member-c1".into(),
        ..MemberClusterSpec::default()
    }
}

fn member_cluster() -> Value {
    let mut m = MemberCluster::new("c1", member_spec());
    m.metadata.namespace = Some("federator-system".into());
    m.metadata.uid = Some("uid-c1".into());
    m.metadata.generation = Some(1);
    serde_json::to_value(m).unwrap()
}

/// A `ClusterTrust` whose spec is already what the hub wants, with a CSR of generation 1.
fn cluster_trust(root: &federator_core::ca::IssuingCa, good_digest: bool) -> (Value, String) {
    let (_, pem) = pki::csr("c1", TD);
    let digest = CsrInfo::parse(pem.as_bytes()).unwrap().digest();
    let mut ct = ClusterTrust::new(
        "local",
        ClusterTrustSpec {
            cluster_name: "c1".into(),
            trust_domain: TD.into(),
            bundle: vec![exchange::bundle_entry(TD, root)],
            bundle_generation: 1,
            csr_generation: 1,
            key_algorithm: "ecdsa-p256".into(),
            signed: None,
        },
    );
    ct.metadata.namespace = Some("federator-system".into());
    ct.status = Some(ClusterTrustStatus {
        csr: Some(CsrStatus {
            generation: 1,
            pem,
            digest: if good_digest {
                digest.clone()
            } else {
                "00".repeat(32)
            },
        }),
        ..ClusterTrustStatus::default()
    });
    (serde_json::to_value(ct).unwrap(), digest)
}

fn trigger() -> Arc<ClusterTrust> {
    Arc::new(ClusterTrust::new("local", ClusterTrustSpec::default()))
}

fn condition(status: &Value, type_: &str) -> Value {
    status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_rejected_credential_is_reported_and_reloaded() {
    let Fixture {
        member,
        mut hub,
        mut cluster,
        ..
    } = fixture(true);
    let run = tokio::spawn(reconcile(trigger(), member.clone()));
    expect(
        &mut cluster,
        Method::GET,
        TRUST,
        401,
        status_body(401, "Unauthorized"),
    )
    .await;
    expect(&mut hub, Method::GET, MEMBER, 200, member_cluster()).await;
    let status = expect(
        &mut hub,
        Method::PATCH,
        &format!("{MEMBER}/status"),
        200,
        member_cluster(),
    )
    .await;
    assert_eq!(condition(&status, "Reachable")["status"], "False");
    assert_eq!(condition(&status, "Ready")["observedGeneration"], 1);
    let problems = status["status"]["problems"].to_string();
    assert!(
        problems.contains("credential was rejected (401") && problems.contains("join cluster c1"),
        "{problems}"
    );
    let event = expect(&mut hub, Method::POST, EVENTS, 201, Value::Null).await;
    assert_eq!(
        (&event["reason"], &event["type"], &event["regarding"]["uid"]),
        (
            &json!("CredentialRejected"),
            &json!("Warning"),
            &json!("uid-c1")
        )
    );
    assert_eq!(
        run.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(5))
    );
    tokio::time::timeout(Duration::from_secs(1), member.reload.notified())
        .await
        .expect("a 401 makes the controller reload the credential");
    expect_nothing(&mut hub).await;
    expect_nothing(&mut cluster).await;
}

#[tokio::test]
async fn a_member_without_its_exchange_object_is_left_alone() {
    let Fixture {
        member,
        mut hub,
        mut cluster,
        ..
    } = fixture(true);
    let run = tokio::spawn(reconcile(trigger(), member));
    expect(
        &mut cluster,
        Method::GET,
        TRUST,
        404,
        status_body(404, "NotFound"),
    )
    .await;
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    expect_nothing(&mut hub).await;
    expect_nothing(&mut cluster).await;
}

#[tokio::test]
async fn a_refused_csr_is_reported_without_touching_the_member() {
    let Fixture {
        member,
        mut hub,
        mut cluster,
        root,
    } = fixture(true);
    let (ct, _) = cluster_trust(&root, false);
    let run = tokio::spawn(reconcile(trigger(), member.clone()));
    expect(&mut cluster, Method::GET, TRUST, 200, ct).await;
    // No spec write: nothing to sign, and the spec already says everything else.
    expect(
        &mut hub,
        Method::GET,
        CREDENTIAL,
        404,
        status_body(404, "NotFound"),
    )
    .await;
    expect(&mut hub, Method::GET, MEMBER, 200, member_cluster()).await;
    let status = expect(
        &mut hub,
        Method::PATCH,
        &format!("{MEMBER}/status"),
        200,
        member_cluster(),
    )
    .await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("CSR generation 1 not signed: the CSR's digest does not match the CSR"),
        "{ready}"
    );
    assert_eq!(condition(&status, "Reachable")["status"], "True");
    let event = expect(&mut hub, Method::POST, EVENTS, 201, Value::Null).await;
    assert_eq!(
        (&event["reason"], &event["type"]),
        (&json!("CsrRefused"), &json!("Warning"))
    );
    assert!(
        event["note"].as_str().unwrap().contains("digest"),
        "{event}"
    );
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(HEARTBEAT));
    assert!(
        member
            .shared
            .metrics
            .render()
            .contains("federator_sign_failures_total{cluster=\"c1\"} 1\n")
    );
    expect_nothing(&mut cluster).await;
}

#[tokio::test]
async fn without_a_signer_the_csr_waits_and_says_why() {
    let Fixture {
        member,
        mut hub,
        mut cluster,
        root,
    } = fixture(false);
    let (ct, _) = cluster_trust(&root, true);
    let run = tokio::spawn(reconcile(trigger(), member));
    expect(&mut cluster, Method::GET, TRUST, 200, ct).await;
    expect(
        &mut hub,
        Method::GET,
        CREDENTIAL,
        404,
        status_body(404, "NotFound"),
    )
    .await;
    expect(&mut hub, Method::GET, MEMBER, 200, member_cluster()).await;
    let status = expect(
        &mut hub,
        Method::PATCH,
        &format!("{MEMBER}/status"),
        200,
        member_cluster(),
    )
    .await;
    assert!(
        status["status"]["problems"]
            .to_string()
            .contains("the signer is not loaded yet"),
        "{status}"
    );
    expect(&mut hub, Method::POST, EVENTS, 201, Value::Null).await;
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(HEARTBEAT));
}

#[tokio::test]
async fn a_valid_csr_is_signed_under_the_trust_domains_root() {
    let Fixture {
        member,
        mut hub,
        mut cluster,
        root,
    } = fixture(true);
    let (ct, digest) = cluster_trust(&root, true);
    let run = tokio::spawn(reconcile(trigger(), member.clone()));
    expect(&mut cluster, Method::GET, TRUST, 200, ct).await;
    let applied = expect(&mut cluster, Method::PATCH, TRUST, 200, Value::Null).await;
    let signed = &applied["spec"]["signed"];
    assert_eq!(
        (&signed["csrDigest"], &signed["generation"]),
        (&json!(digest), &json!(1))
    );
    let chain = signed["chainPem"].as_str().unwrap();
    assert!(
        chain.contains(&root.cert_pem()),
        "the chain ends at the root"
    );
    assert!(signed["renewAfter"].is_string() && signed["notAfter"].is_string());
    expect(
        &mut hub,
        Method::GET,
        CREDENTIAL,
        404,
        status_body(404, "NotFound"),
    )
    .await;
    expect(&mut hub, Method::GET, MEMBER, 200, member_cluster()).await;
    expect(
        &mut hub,
        Method::PATCH,
        &format!("{MEMBER}/status"),
        200,
        member_cluster(),
    )
    .await;
    let event = expect(&mut hub, Method::POST, EVENTS, 201, Value::Null).await;
    assert_eq!(
        (&event["reason"], &event["type"]),
        (&json!("CsrSigned"), &json!("Normal"))
    );
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(HEARTBEAT));
    assert!(
        member
            .shared
            .metrics
            .render()
            .contains("federator_signed_total{cluster=\"c1\"} 1\n")
    );
    expect_nothing(&mut hub).await;
    expect_nothing(&mut cluster).await;
}
