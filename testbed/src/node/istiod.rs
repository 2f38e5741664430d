//! istiod as a real Pod on a node: a Deployment `istio-system/istiod` that the
//! controller-manager rolls out and the kubelet runs, with `cacerts` mounted through the
//! kubelet's Secret volume, as Istio's own chart does it.
//!
//! What [`IstiodPod::start`] applies (field manager `testbed`):
//! * namespace `istio-system` and the mesh config ConfigMap `istio` with `trustDomain` (the
//!   same as the process mode, [`crate::istiod::ensure_trust_domain`]);
//! * ServiceAccount `istiod`, bound to `cluster-admin` (Istio's chart grants a long, narrower
//!   ClusterRole; what istiod may do is not what the testbed tests);
//! * Deployment `istiod`: one replica, the chart's rolling update (`maxSurge: 100%`,
//!   `maxUnavailable: 25%`: the new Pod is ready before the old one stops), container
//!   `discovery` from the image made of `pilot-discovery` (user 1337, read-only root file
//!   system, all capabilities dropped, `RuntimeDefault` seccomp), args `discovery
//!   --monitoringAddr=:15014 --log_output_level=default:info --domain cluster.local`,
//!   readiness `GET :8080/ready`, the Secret `cacerts` at `/etc/cacerts` (`optional: true`;
//!   istiod's default `ROOT_CA_DIR` is `./etc/cacerts` from `/`) and the ConfigMap `istio` at
//!   `/etc/istio/config` (the mesh config file istiod reads), an `emptyDir` at
//!   `/var/run/secrets/istio-dns`; environment `REVISION=default`, `CLUSTER_ID=<cluster>`,
//!   `ISTIO_MULTIROOT_MESH`, `PILOT_CERT_PROVIDER=istiod`, `ENABLE_LEADER_ELECTION=false`,
//!   `POD_NAME`/`POD_NAMESPACE`/`SERVICE_ACCOUNT` from the downward API, and the options'
//!   extra variables.
//!
//! istiod reaches the apiserver through the `kubernetes` Service like any in-cluster client;
//! its ports are the Pod's own (15012 for the CA on the Pod's IP), so several istiods on one
//! machine never collide. The agent's `federator.io/restartedAt` annotation on the pod
//! template makes the controller-manager roll out a new ReplicaSet.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::Node;
use crate::image::Archive;
use crate::istiod::{CaMode, DEPLOYMENT, IstiodOptions, NAMESPACE};
use crate::{Error, Result};

const FIELD_MANAGER: &str = "testbed";
/// The container's name (as in Istio's chart).
pub const CONTAINER: &str = "discovery";
/// istiod's CA and XDS port over TLS.
pub const SECURE_GRPC_PORT: u16 = 15012;
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// One istiod Pod as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// The Pod's name.
    pub name: String,
    /// Its uid (a new Pod of the same name would have another).
    pub uid: String,
    /// Its IP on the node's network.
    pub ip: Option<IpAddr>,
    /// Whether it is `Ready`.
    pub ready: bool,
    /// Whether it is being deleted.
    pub terminating: bool,
}

struct Inner {
    node: Node,
    client: kube::Client,
    opts: IstiodOptions,
    started_in: std::sync::Mutex<Duration>,
}

/// istiod running as a Deployment on a node. Cheap to clone.
#[derive(Clone)]
pub struct IstiodPod {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IstiodPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstiodPod")
            .field("cluster", &self.inner.node.cluster().name())
            .finish_non_exhaustive()
    }
}

/// The Deployment (see the module docs).
pub fn deployment(cluster: &str, image: &str, opts: &IstiodOptions) -> serde_json::Value {
    let field = |path: &str| json!({"valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        json!({"name": "REVISION", "value": "default"}),
        json!({"name": "CLUSTER_ID", "value": cluster}),
        json!({"name": "ISTIO_MULTIROOT_MESH", "value": opts.multi_root.to_string()}),
        json!({"name": "PILOT_CERT_PROVIDER", "value": "istiod"}),
        json!({"name": "ENABLE_LEADER_ELECTION", "value": "false"}),
    ];
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ] {
        let mut v = field(path);
        v["name"] = json!(name);
        env.push(v);
    }
    for (k, v) in &opts.env {
        env.retain(|e| e["name"] != json!(k));
        env.push(json!({"name": k, "value": v}));
    }
    let labels = json!({"app": "istiod", "istio.io/rev": "default"});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "istiod"}},
            "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "istiod",
                    // No cluster DNS on the testbed; istiod needs none.
                    "dnsPolicy": "Default",
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": CONTAINER,
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": [
                            "discovery",
                            "--monitoringAddr=:15014",
                            "--log_output_level=default:info",
                            "--domain", "cluster.local",
                            "--keepaliveMaxServerConnectionAge", "30m",
                        ],
                        "ports": [
                            {"containerPort": 8080, "protocol": "TCP", "name": "http-debug"},
                            {"containerPort": 15010, "protocol": "TCP", "name": "grpc-xds"},
                            {"containerPort": 15012, "protocol": "TCP", "name": "tls-xds"},
                            {"containerPort": 15017, "protocol": "TCP", "name": "https-webhooks"},
                            {"containerPort": 15014, "protocol": "TCP", "name": "http-monitoring"},
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": 8080},
                            "initialDelaySeconds": 1,
                            "periodSeconds": 3,
                            "timeoutSeconds": 5,
                        },
                        "env": env,
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "runAsUser": 1337,
                            "runAsGroup": 1337,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [
                            {"name": "local-certs", "mountPath": "/var/run/secrets/istio-dns"},
                            {"name": "cacerts", "mountPath": "/etc/cacerts", "readOnly": true},
                            {"name": "config-volume", "mountPath": "/etc/istio/config"},
                        ],
                    }],
                    "volumes": [
                        {"name": "local-certs", "emptyDir": {"medium": "Memory"}},
                        {"name": "cacerts", "secret": {"secretName": "cacerts", "optional": true}},
                        {"name": "config-volume", "configMap": {"name": "istio"}},
                    ],
                },
            },
        },
    })
}

fn pod_ref(p: &Pod) -> PodRef {
    let status = p.status.as_ref();
    PodRef {
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        ip: status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        terminating: p.metadata.deletion_timestamp.is_some(),
    }
}

impl IstiodPod {
    /// Imports the image, applies the objects and waits until the Deployment has one ready,
    /// up-to-date Pod.
    pub async fn start(node: &Node, archive: &Archive, opts: IstiodOptions) -> Result<Self> {
        let started = Instant::now();
        node.import(archive).await?;
        let cluster = node.cluster();
        let client = cluster.client().await?;
        ensure_namespace(&client).await?;
        crate::istiod::ensure_trust_domain(&client, &opts.trust_domain).await?;
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "istiod", "namespace": NAMESPACE},
        });
        Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
            .patch("istiod", &apply, &Patch::Apply(&sa))
            .await?;
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "testbed-istiod"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "istiod", "namespace": NAMESPACE}],
        });
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch("testbed-istiod", &apply, &Patch::Apply(&binding))
            .await?;
        let d = deployment(cluster.name(), &archive.name, &opts);
        Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
            .patch(DEPLOYMENT, &apply, &Patch::Apply(&d))
            .await?;
        let pod = IstiodPod {
            inner: Arc::new(Inner {
                node: node.clone(),
                client,
                opts,
                started_in: std::sync::Mutex::new(Duration::ZERO),
            }),
        };
        pod.wait_rolled_out(READY_TIMEOUT).await?;
        *pod.inner
            .started_in
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = started.elapsed();
        Ok(pod)
    }

    /// The node it runs on.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The cluster's name.
    pub fn cluster_name(&self) -> &str {
        self.inner.node.cluster().name()
    }

    /// The trust domain of its mesh config.
    pub fn trust_domain(&self) -> &str {
        &self.inner.opts.trust_domain
    }

    /// From [`IstiodPod::start`] to a ready Pod (image import included).
    pub fn started_in(&self) -> Duration {
        // Only a Duration is stored; a poisoned lock still holds a valid one.
        *self
            .inner
            .started_in
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The Deployment.
    pub async fn deployment(&self) -> Result<Deployment> {
        Ok(
            Api::<Deployment>::namespaced(self.inner.client.clone(), NAMESPACE)
                .get(DEPLOYMENT)
                .await?,
        )
    }

    /// istiod's Pods (also terminating ones), oldest first.
    pub async fn pods(&self) -> Result<Vec<PodRef>> {
        let mut pods = Api::<Pod>::namespaced(self.inner.client.clone(), NAMESPACE)
            .list(&ListParams::default().labels("app=istiod"))
            .await?
            .items;
        pods.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        });
        Ok(pods.iter().map(pod_ref).collect())
    }

    /// The one ready, not terminating Pod, if there is exactly one.
    pub async fn current_pod(&self) -> Result<PodRef> {
        let pods: Vec<PodRef> = self
            .pods()
            .await?
            .into_iter()
            .filter(|p| p.ready && !p.terminating)
            .collect();
        match pods.as_slice() {
            [one] => Ok(one.clone()),
            other => Err(Error::Api(format!(
                "istiod of {}: {} ready Pods (a rollout in progress?)",
                self.cluster_name(),
                other.len()
            ))),
        }
    }

    /// The newest ready Pod that is not terminating (during a rollout, the new one once it is
    /// ready), if any.
    pub async fn serving_pod(&self) -> Result<PodRef> {
        self.pods()
            .await?
            .into_iter()
            .rev()
            .find(|p| p.ready && !p.terminating && p.ip.is_some())
            .ok_or_else(|| Error::Api(format!("istiod of {}: no ready Pod", self.cluster_name())))
    }

    /// The CA port of [`IstiodPod::serving_pod`].
    pub async fn serving_addr(&self) -> Result<SocketAddr> {
        let pod = self.serving_pod().await?;
        let ip = pod
            .ip
            .ok_or_else(|| Error::Api(format!("istiod Pod {} has no IP", pod.name)))?;
        Ok(SocketAddr::new(ip, SECURE_GRPC_PORT))
    }

    /// Waits until the Deployment's rollout is complete: the controller-manager saw its
    /// latest generation, and exactly one Pod runs, up to date and ready, none terminating.
    pub async fn wait_rolled_out(&self, timeout: Duration) -> Result<PodRef> {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self.deployment().await?;
            let generation = d.metadata.generation.unwrap_or(0);
            let st = d.status.clone().unwrap_or_default();
            let done = st.observed_generation == Some(generation)
                && st.updated_replicas == Some(1)
                && st.ready_replicas == Some(1)
                && st.replicas == Some(1);
            if done {
                let pods = self.pods().await?;
                if let [one] = pods.as_slice()
                    && one.ready
                    && !one.terminating
                    && one.ip.is_some()
                {
                    return Ok(one.clone());
                }
            }
            if Instant::now() > deadline {
                let pods = self.pods().await.unwrap_or_default();
                return Err(Error::NotReady {
                    name: format!("{}/istiod (Deployment rollout)", self.cluster_name()),
                    secs: timeout.as_secs(),
                    log: self.inner.node.dir().join("kubelet.log"),
                    tail: format!("Deployment status {st:?}; Pods {pods:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The CA port of the current Pod (`<pod IP>:15012`).
    pub async fn secure_grpc_addr(&self) -> Result<SocketAddr> {
        let pod = self.current_pod().await?;
        let ip = pod
            .ip
            .ok_or_else(|| Error::Api(format!("istiod Pod {} has no IP", pod.name)))?;
        Ok(SocketAddr::new(ip, SECURE_GRPC_PORT))
    }

    /// The log of the `discovery` container of Pod `pod` (as the kubelet wrote it).
    pub fn log_of(&self, pod: &str) -> String {
        self.inner.node.container_log(NAMESPACE, pod, CONTAINER)
    }

    /// How many lines of Pod `pod`'s log contain `needle`.
    pub fn log_count(&self, pod: &str, needle: &str) -> usize {
        self.log_of(pod)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Which CA Pod `pod` started with, once it has logged it.
    pub fn ca_mode_of(&self, pod: &str) -> Option<CaMode> {
        CaMode::from_log(&self.log_of(pod))
    }

    /// The Deployment's `metadata.generation` (it grows with every change of its spec, such
    /// as each restart request).
    pub async fn generation(&self) -> Result<i64> {
        Ok(self.deployment().await?.metadata.generation.unwrap_or(0))
    }

    /// Annotations of the current pod template (e.g. to see the agent's restart annotation).
    pub async fn template_annotations(&self) -> Result<BTreeMap<String, String>> {
        Ok(self
            .deployment()
            .await?
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default())
    }
}

async fn ensure_namespace(client: &kube::Client) -> Result<()> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            NAMESPACE,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&ns),
        )
        .await?;
    Ok(())
}
