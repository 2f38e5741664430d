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
use tokio::task::JoinHandle;

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
            reader_token_ttl: Duration::from_secs(3600),
            reader_token_renew_after: None,
            metrics_addr: None,
            bundle_endpoint: None,
        },
        Arc::new(Metrics::default()),
        Arc::new(crate::hub::serve::probes::Probes::default()),
    ));
    shared.desired.send_replace(Desired {
        bundle: vec![exchange::bundle_entry(TD, &root)],
        bundle_generation: 1,
        foreign: Vec::new(),
        key_algorithm: "ecdsa-p256".into(),
        renew_at_percent: 50,
        cluster_ca_ttl: Duration::from_secs(3600),
        signing_roots: [(
            TD.to_owned(),
            federator_core::cert::fingerprint(root.root_der()),
        )]
        .into(),
        endpoint_roots: Default::default(),
        resign: Default::default(),
        reissue: Default::default(),
        constrain_to_trust_domain: false,
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

impl Fixture {
    /// Starts a reconcile and answers its first call, the read of the `ClusterTrust`.
    async fn start(&mut self, code: u16, answer: Value) -> JoinHandle<crate::Result<Action>> {
        let run = tokio::spawn(reconcile(trigger(), self.member.clone()));
        expect(&mut self.cluster, Method::GET, TRUST, code, answer).await;
        run
    }

    /// Starts a reconcile that reads a `ClusterTrust` with a CSR of generation 1 (its digest
    /// right or not); returns it and the CSR's digest.
    async fn start_with_csr(
        &mut self,
        good_digest: bool,
    ) -> (JoinHandle<crate::Result<Action>>, String) {
        let (ct, digest) = cluster_trust(&self.root, good_digest);
        (self.start(200, ct).await, digest)
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
            peers_digest: String::new(),
            foreign: Vec::new(),
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

/// The hub's side of the end of a reconcile: the stored credential is read (there is none)
/// when `credential`, then the `MemberCluster` and its status write, whose body is returned.
async fn expect_report(hub: &mut Handle, credential: bool) -> Value {
    if credential {
        let missing = status_body(404, "NotFound");
        expect(hub, Method::GET, CREDENTIAL, 404, missing).await;
    }
    expect(hub, Method::GET, MEMBER, 200, member_cluster()).await;
    let status_path = format!("{MEMBER}/status");
    expect(hub, Method::PATCH, &status_path, 200, member_cluster()).await
}

/// The next event published on the hub: (reason, type, the whole event).
async fn expect_event(hub: &mut Handle) -> (String, String, Value) {
    let event = expect(hub, Method::POST, EVENTS, 201, Value::Null).await;
    let field = |k: &str| event[k].as_str().unwrap_or_default().to_owned();
    (field("reason"), field("type"), event)
}

fn metrics(member: &Member) -> String {
    member.shared.metrics.render()
}

#[tokio::test]
async fn a_rejected_credential_is_reported_and_reloaded() {
    let mut f = fixture(true);
    let run = f.start(401, status_body(401, "Unauthorized")).await;
    let status = expect_report(&mut f.hub, false).await;
    assert_eq!(condition(&status, "Reachable")["status"], "False");
    assert_eq!(condition(&status, "Ready")["observedGeneration"], 1);
    let problems = status["status"]["problems"].to_string();
    assert!(
        problems.contains("credential was rejected (401") && problems.contains("join cluster c1"),
        "{problems}"
    );
    let (reason, type_, event) = expect_event(&mut f.hub).await;
    assert_eq!(
        (reason.as_str(), type_.as_str()),
        ("CredentialRejected", "Warning")
    );
    assert_eq!(event["regarding"]["uid"], "uid-c1");
    let action = run.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    tokio::time::timeout(Duration::from_secs(1), f.member.reload.notified())
        .await
        .expect("a 401 makes the controller reload the credential");
    expect_nothing(&mut f.hub).await;
    expect_nothing(&mut f.cluster).await;
}

#[tokio::test]
async fn a_member_without_its_exchange_object_is_left_alone() {
    let mut f = fixture(true);
    let run = f.start(404, status_body(404, "NotFound")).await;
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    expect_nothing(&mut f.hub).await;
    expect_nothing(&mut f.cluster).await;
}

#[tokio::test]
async fn a_refused_csr_is_reported_without_touching_the_member() {
    let mut f = fixture(true);
    let (run, _) = f.start_with_csr(false).await;
    // No spec write: nothing to sign, and the spec already says everything else.
    let status = expect_report(&mut f.hub, true).await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("CSR generation 1 not signed: the CSR's digest does not match the CSR"),
        "{ready}"
    );
    assert_eq!(condition(&status, "Reachable")["status"], "True");
    let (reason, type_, event) = expect_event(&mut f.hub).await;
    assert_eq!((reason.as_str(), type_.as_str()), ("CsrRefused", "Warning"));
    assert!(
        event["note"].as_str().unwrap().contains("digest"),
        "{event}"
    );
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(HEARTBEAT));
    assert!(metrics(&f.member).contains("federator_sign_failures_total{cluster=\"c1\"} 1\n"));
    expect_nothing(&mut f.cluster).await;
}

#[tokio::test]
async fn without_a_signer_the_csr_waits_and_says_why() {
    let mut f = fixture(false);
    let (run, _) = f.start_with_csr(true).await;
    let status = expect_report(&mut f.hub, true).await;
    let problems = status["status"]["problems"].to_string();
    assert!(
        problems.contains("the signer is not loaded yet"),
        "{status}"
    );
    let (reason, _, _) = expect_event(&mut f.hub).await;
    assert_eq!(reason, "CsrRefused");
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(HEARTBEAT));
}

#[tokio::test]
async fn a_valid_csr_is_signed_under_the_trust_domains_root() {
    let mut f = fixture(true);
    let (run, digest) = f.start_with_csr(true).await;
    let applied = expect(&mut f.cluster, Method::PATCH, TRUST, 200, Value::Null).await;
    let signed = &applied["spec"]["signed"];
    assert_eq!(
        (&signed["csrDigest"], &signed["generation"]),
        (&json!(digest), &json!(1))
    );
    let chain = signed["chainPem"].as_str().unwrap();
    assert!(
        chain.contains(&f.root.cert_pem()),
        "the chain ends at the root"
    );
    assert!(signed["renewAfter"].is_string() && signed["notAfter"].is_string());
    expect_report(&mut f.hub, true).await;
    let (reason, type_, _) = expect_event(&mut f.hub).await;
    assert_eq!((reason.as_str(), type_.as_str()), ("CsrSigned", "Normal"));
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(HEARTBEAT));
    assert!(metrics(&f.member).contains("federator_signed_total{cluster=\"c1\"} 1\n"));
    expect_nothing(&mut f.hub).await;
    expect_nothing(&mut f.cluster).await;
}
