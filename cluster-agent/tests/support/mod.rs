//! A one-cluster testbed with the agent's CRD, namespaces and RBAC installed, the
//! `cluster-agent` binary running under its own least-privilege token, and the test playing
//! the hub with the admin client.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use federator_api::member::{BundleEntry, ClusterTrust, ClusterTrustSpec, SignedCa};
use federator_api::{names, rbac};
use federator_core::ca::IssuingCa;
use federator_testkit::exchange::{self, Hub};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Namespace, PodSpec, PodTemplateSpec, Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use testbed::{Cluster, Process, ProcessSpec, Testbed, TestbedOptions};

pub const CLUSTER: &str = "east";
pub const TD: &str = "cluster.local";
pub const PEER_TD: &str = "west.local";

pub use federator_testkit::exchange::bundle_entry as entry;
pub use federator_testkit::pki::root;

/// The hub's answer to a CSR, under policy (`td` the trust domain the hub certifies).
pub fn sign(root: &IssuingCa, csr_pem: &str, generation: i64, td: &str) -> SignedCa {
    exchange::signed(root, csr_pem, generation, (CLUSTER, td), Hub::Honest)
}

/// A rogue answer: the CSR's key certified for trust domain `td`, whatever the CSR asked.
pub fn sign_for_other_domain(
    root: &IssuingCa,
    csr_pem: &str,
    generation: i64,
    td: &str,
) -> SignedCa {
    exchange::signed(root, csr_pem, generation, (CLUSTER, td), Hub::Rogue)
}

/// Secret data as bytes.
pub fn data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    federator_api::plumbing::secret_data(s)
}

pub struct Fixture {
    pub testbed: Testbed,
    pub cluster: Cluster,
    pub admin: Client,
    pub agent_kubeconfig: PathBuf,
    pub agent: Option<Process>,
    pub started: Instant,
    pub agent_token: String,
    agent_runs: u32,
}

impl Fixture {
    /// A cluster with the CRD, `federator-system` (and `istio-system` when `istio_ns`), the
    /// agent's ServiceAccount, Roles and RoleBindings, and a kubeconfig for its token. The
    /// agent is not started.
    pub async fn new(istio_ns: bool) -> Fixture {
        let started = Instant::now();
        let testbed = Testbed::start(TestbedOptions::named([CLUSTER]))
            .await
            .unwrap();
        let cluster = testbed.cluster(CLUSTER).unwrap().clone();
        let admin = cluster.client().await.unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
        let crd = ClusterTrust::crd();
        let crd_name = crd.name_any();
        crds.create(&PostParams::default(), &crd).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds, &crd_name, conditions::is_crd_established()),
        )
        .await
        .expect("the ClusterTrust CRD was not Established within 30 s")
        .unwrap();
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let mut ns_list = vec![names::NAMESPACE];
        if istio_ns {
            ns_list.push(names::ISTIO_NAMESPACE);
        }
        for ns in ns_list {
            namespaces
                .create(&PostParams::default(), &namespace(ns))
                .await
                .unwrap();
        }
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), names::NAMESPACE);
        sas.create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(names::AGENT_SERVICE_ACCOUNT.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let fx = Fixture {
            testbed,
            cluster,
            admin,
            agent_kubeconfig: PathBuf::new(),
            agent: None,
            started,
            agent_token: String::new(),
            agent_runs: 0,
        };
        fx.install_rbac().await;
        let token = fx
            .cluster
            .token_request(
                names::NAMESPACE,
                names::AGENT_SERVICE_ACCOUNT,
                &[],
                Some(24 * 3600),
            )
            .await
            .unwrap();
        let path = fx.testbed.dir().join("agent.kubeconfig");
        fx.cluster
            .write_kubeconfig_for_token(&token, &path)
            .unwrap();
        Fixture {
            agent_kubeconfig: path,
            agent_token: token,
            ..fx
        }
    }

    /// Creates the `istio-system` namespace (when the fixture started without it).
    pub async fn create_istio_namespace(&self) {
        Api::<Namespace>::all(self.admin.clone())
            .create(&PostParams::default(), &namespace(names::ISTIO_NAMESPACE))
            .await
            .unwrap();
    }

    /// Installs the agent's Roles and RoleBindings (skipping namespaces that do not exist).
    async fn install_rbac(&self) {
        for role in rbac::agent_roles() {
            let ns = role.namespace().unwrap();
            let name = role.name_any();
            let roles: Api<k8s_openapi::api::rbac::v1::Role> =
                Api::namespaced(self.admin.clone(), &ns);
            let bindings: Api<RoleBinding> = Api::namespaced(self.admin.clone(), &ns);
            let pp = PatchParams::apply("test").force();
            match roles.patch(&name, &pp, &Patch::Apply(&role)).await {
                Ok(_) => {}
                // Its namespace does not exist (yet): `reinstall_rbac` after creating it.
                Err(kube::Error::Api(s)) if s.is_not_found() => continue,
                Err(e) => panic!("cannot install Role {ns}/{name}: {e}"),
            }
            let binding = RoleBinding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: name.clone(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: names::AGENT_SERVICE_ACCOUNT.into(),
                    namespace: Some(names::NAMESPACE.into()),
                    ..Default::default()
                }]),
            };
            bindings
                .patch(&name, &pp, &Patch::Apply(&binding))
                .await
                .unwrap();
        }
    }

    /// The RBAC objects in a namespace that does not exist yet cannot be created; installs
    /// them again after `create_istio_namespace`.
    pub async fn reinstall_rbac(&self) {
        self.install_rbac().await;
    }

    /// Starts the agent binary with its own token.
    pub fn start_agent(&mut self) {
        self.agent_runs += 1;
        let log = self.testbed.dir().join("agent.log");
        let spec = ProcessSpec::new(
            format!("cluster-agent-{}", self.agent_runs),
            env!("CARGO_BIN_EXE_cluster-agent"),
            log,
        )
        .args(federator_testkit::agent_args(
            &self.agent_kubeconfig,
            CLUSTER,
            "info,cluster_agent=debug",
        ));
        self.agent = Some(Process::spawn(spec).unwrap());
    }

    /// SIGKILLs the agent.
    pub fn kill_agent(&mut self) {
        if let Some(mut p) = self.agent.take() {
            p.kill();
        }
    }

    /// The last lines of the agent's log (for failure messages).
    pub fn agent_log(&self) -> String {
        let text =
            std::fs::read_to_string(self.testbed.dir().join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Polls `check` until it returns `Ok`, or panics after `timeout` with `what`, the last
    /// `Err` and the agent's log.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        federator_testkit::wait_until(what, timeout, check, || {
            format!("agent log:\n{}", self.agent_log())
        })
        .await
    }

    pub fn trusts(&self) -> Api<ClusterTrust> {
        Api::namespaced(self.admin.clone(), names::NAMESPACE)
    }

    pub fn istio_secrets(&self) -> Api<Secret> {
        Api::namespaced(self.admin.clone(), names::ISTIO_NAMESPACE)
    }

    pub fn own_secrets(&self) -> Api<Secret> {
        Api::namespaced(self.admin.clone(), names::NAMESPACE)
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.admin.clone(), names::ISTIO_NAMESPACE)
    }

    pub fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.admin.clone(), names::ISTIO_NAMESPACE)
    }

    pub async fn trust(&self) -> ClusterTrust {
        self.trusts().get(names::CLUSTER_TRUST).await.unwrap()
    }

    /// Creates `ClusterTrust local` as `federator join` does.
    pub async fn create_trust(&self, bundle: Vec<BundleEntry>, csr_generation: i64) {
        let spec = ClusterTrustSpec {
            cluster_name: CLUSTER.into(),
            trust_domain: TD.into(),
            bundle,
            bundle_generation: 1,
            csr_generation,
            ..Default::default()
        };
        self.trusts()
            .create(
                &PostParams::default(),
                &ClusterTrust::new(names::CLUSTER_TRUST, spec),
            )
            .await
            .unwrap();
    }

    /// Merge-patches the spec, as the hub does.
    pub async fn patch_spec(&self, spec: serde_json::Value) {
        self.trusts()
            .patch(
                names::CLUSTER_TRUST,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Waits for `status.csr` of `generation` and returns its PEM.
    pub async fn wait_csr(&self, generation: i64) -> String {
        self.wait_for(
            &format!("status.csr of generation {generation}"),
            Duration::from_secs(60),
            || async {
                let t = self.trust().await;
                match t.status.as_ref().and_then(|s| s.csr.as_ref()) {
                    Some(c) if c.generation == generation => Ok(c.pem.clone()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
    }

    /// Waits until `status.installed` reports CSR generation `csr_generation` and bundle
    /// generation `bundle_generation`, and returns the cacerts data.
    pub async fn wait_installed(
        &self,
        csr_generation: i64,
        bundle_generation: i64,
    ) -> BTreeMap<String, Vec<u8>> {
        self.wait_for(
            &format!("status.installed with CSR generation {csr_generation}, bundle generation {bundle_generation}"),
            Duration::from_secs(60),
            || async {
                let t = self.trust().await;
                let inst = t.status.as_ref().and_then(|s| s.installed.clone());
                match &inst {
                    Some(i) if i.csr_generation == csr_generation && i.bundle_generation == bundle_generation => {}
                    _ => return Err(format!("installed: {inst:?}, status: {:?}", t.status)),
                }
                match self.istio_secrets().get_opt(names::CACERTS_SECRET).await.unwrap() {
                    Some(s) => Ok(data(&s)),
                    None => Err("no cacerts".into()),
                }
            },
        )
        .await
    }

    /// The agent Secret's data.
    pub async fn agent_secret(&self) -> BTreeMap<String, Vec<u8>> {
        data(
            &self
                .own_secrets()
                .get(names::AGENT_KEY_SECRET)
                .await
                .unwrap(),
        )
    }

    /// The cacerts data, if any.
    pub async fn cacerts(&self) -> Option<BTreeMap<String, Vec<u8>>> {
        self.istio_secrets()
            .get_opt(names::CACERTS_SECRET)
            .await
            .unwrap()
            .map(|s| data(&s))
    }

    /// Edits `cacerts` by hand.
    pub async fn edit_cacerts(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, k8s_openapi::ByteString>),
    ) {
        let api = self.istio_secrets();
        let mut s = api.get(names::CACERTS_SECRET).await.unwrap();
        f(s.data.get_or_insert_with(BTreeMap::new));
        s.metadata.managed_fields = None;
        api.replace(names::CACERTS_SECRET, &PostParams::default(), &s)
            .await
            .unwrap();
    }

    /// Creates an istiod Deployment (no pod will ever run: the testbed has no controllers).
    pub async fn create_istiod(&self, multi_root: Option<&str>) {
        let labels: BTreeMap<String, String> = [("app".to_owned(), "istiod".to_owned())].into();
        let env = multi_root.map(|v| {
            vec![EnvVar {
                name: "ISTIO_MULTIROOT_MESH".into(),
                value: Some(v.into()),
                ..Default::default()
            }]
        });
        let d = Deployment {
            metadata: ObjectMeta {
                name: Some(names::ISTIOD_DEPLOYMENT.into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "discovery".into(),
                            image: Some("docker.io/istio/pilot:1.31.0".into()),
                            env,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        };
        self.deployments()
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }

    /// Sets `ISTIO_MULTIROOT_MESH` on istiod.
    pub async fn set_multi_root(&self, value: &str) {
        let mut d = self
            .deployments()
            .get(names::ISTIOD_DEPLOYMENT)
            .await
            .unwrap();
        let c = &mut d
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0];
        c.env = Some(vec![EnvVar {
            name: "ISTIO_MULTIROOT_MESH".into(),
            value: Some(value.into()),
            ..Default::default()
        }]);
        d.metadata.managed_fields = None;
        self.deployments()
            .replace(names::ISTIOD_DEPLOYMENT, &PostParams::default(), &d)
            .await
            .unwrap();
    }

    /// istiod's restart annotation.
    pub async fn restarted_at(&self) -> Option<String> {
        let d = self
            .deployments()
            .get(names::ISTIOD_DEPLOYMENT)
            .await
            .unwrap();
        d.spec?
            .template
            .metadata?
            .annotations?
            .get(names::RESTARTED_AT_ANNOTATION)
            .cloned()
    }

    /// Creates the `istio` ConfigMap with a `mesh` key.
    pub async fn create_mesh_config(&self, mesh: &str) {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(names::ISTIO_CONFIGMAP.into()),
                ..Default::default()
            },
            data: Some([(names::MESH_KEY.to_owned(), mesh.to_owned())].into()),
            ..Default::default()
        };
        self.configmaps()
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }

    /// The `mesh` of the `istio` ConfigMap, parsed.
    pub async fn mesh(&self) -> serde_yaml::Value {
        let cm = self.configmaps().get(names::ISTIO_CONFIGMAP).await.unwrap();
        serde_yaml::from_str(&cm.data.unwrap()[names::MESH_KEY]).unwrap()
    }

    /// resourceVersions of every object the agent reads or writes.
    pub async fn resource_versions(&self) -> BTreeMap<&'static str, Option<String>> {
        async fn rv<K>(api: Api<K>, name: &str) -> Option<String>
        where
            K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        {
            api.get_opt(name)
                .await
                .unwrap()
                .and_then(|o| o.meta().resource_version.clone())
        }
        [
            (
                "ClusterTrust",
                rv(self.trusts(), names::CLUSTER_TRUST).await,
            ),
            (
                "cacerts",
                rv(self.istio_secrets(), names::CACERTS_SECRET).await,
            ),
            (
                "agent Secret",
                rv(self.own_secrets(), names::AGENT_KEY_SECRET).await,
            ),
            (
                "istio ConfigMap",
                rv(self.configmaps(), names::ISTIO_CONFIGMAP).await,
            ),
            (
                "istiod Deployment",
                rv(self.deployments(), names::ISTIOD_DEPLOYMENT).await,
            ),
        ]
        .into()
    }

    /// Asserts that nothing the agent touches changes over `window`.
    pub async fn assert_steady(&self, window: Duration) {
        let before = self.resource_versions().await;
        tokio::time::sleep(window).await;
        let after = self.resource_versions().await;
        assert_eq!(
            before,
            after,
            "writes at steady state\nagent log:\n{}",
            self.agent_log()
        );
    }
}

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `openssl verify -x509_strict` of `ca-cert.pem` against `root-cert.pem` through
/// `cert-chain.pem`.
pub use federator_testkit::openssl::verify_cacerts as openssl_verify;
