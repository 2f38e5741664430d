//! Real istiod (`pilot-discovery discovery`) for a testbed cluster, with stand-ins for the two
//! pieces of Kubernetes it relies on that the testbed does not run: the kubelet's Secret
//! volume and the Deployment controller.
//!
//! [`Istiod::start`] prepares the cluster and starts one istiod process against the cluster's
//! apiserver (its admin kubeconfig, which may create TokenReviews):
//!
//! * namespace `istio-system`; the mesh config ConfigMap `istio-system/istio` (key `mesh`)
//!   with the cluster's `trustDomain` (created, or its `trustDomain` set, other fields kept:
//!   istiod reads its mesh config from there because `./etc/istio/config/mesh` does not exist
//!   in its working directory, and the agent merges `caCertificates` into the same key);
//! * a Deployment object `istio-system/istiod` recording the environment istiod runs with
//!   (the agent reads `ISTIO_MULTIROOT_MESH` there). No pod ever runs: the process is the pod;
//! * `DIR/<cluster>/istiod/cacerts/`, istiod's `ROOT_CA_DIR`, mirrored from Secret
//!   `istio-system/cacerts` by [`crate::secret_volume`] (timestamped directory, atomic `..data`
//!   swap, per-key symlinks), before the first start and on every change of the Secret;
//! * a watch on the Deployment: when its pod template changes (the agent bumps the annotation
//!   `federator.io/restartedAt`, as `kubectl rollout restart` does), the process is restarted:
//!   SIGTERM (SIGKILL after 5 s), the volume re-read, a new process on the same ports, ready.
//!
//! istiod's environment (see `docs/istio-plugin-ca.md`): `POD_NAMESPACE=istio-system`,
//! `REVISION=default`, `CLUSTER_ID=<cluster>`, `ROOT_CA_DIR=<abs dir>`,
//! `ISTIO_MULTIROOT_MESH` (true unless [`IstiodOptions::multi_root`] says otherwise),
//! `ISTIOD_CUSTOM_HOST=localhost`, `PILOT_CERT_PROVIDER=istiod` and
//! `ENABLE_LEADER_ELECTION=false` (one istiod per cluster: without this a restarted istiod
//! waits up to 30 s for its predecessor's leases before it writes `istio-ca-root-cert`).
//! Every listener is on 127.0.0.1: HTTP (`/ready`, debug), plaintext gRPC (15010's role),
//! secure gRPC (15012's role: XDS and the CA), webhook HTTPS (15017's), monitoring (15014's),
//! each on a free port picked at start (retried on "address already in use"), and ControlZ
//! on a port the kernel picks. Istio's CRDs are not needed: istiod starts, serves its CA and
//! writes `istio-ca-root-cert` without them (its CRD watcher just waits).
//!
//! The process is a [`Process`]: its own process group, a parent-death signal, killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::cluster::Cluster;
use crate::process::{self, Process, ProcessSpec};
use crate::secret_volume;
use crate::{Error, Result};

/// Istio's namespace.
pub const NAMESPACE: &str = "istio-system";
/// The Deployment the agent restarts.
pub const DEPLOYMENT: &str = "istiod";
/// The plug-in CA Secret mirrored into `ROOT_CA_DIR`.
pub const CACERTS: &str = "cacerts";
/// The mesh config ConfigMap and its key.
pub const MESH_CONFIGMAP: &str = "istio";
/// Key of the mesh config in [`MESH_CONFIGMAP`].
pub const MESH_KEY: &str = "mesh";
/// The ConfigMap istiod writes into every namespace with its `root-cert.pem`.
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
/// Field manager of the testbed's writes.
const FIELD_MANAGER: &str = "testbed";

/// What istiod logs when it starts with a plug-in CA (complete `cacerts` files).
pub const LOG_PLUGIN_CA: &str = "Use local CA certificate";
/// What istiod logs when it starts with its own self-signed CA (no `cacerts`).
pub const LOG_SELF_SIGNED_CA: &str = "Use self-signed certificate as the CA certificate";
/// What istiod logs after hot-reloading changed `cacerts` files.
pub const LOG_HOT_RELOAD: &str =
    "Istiod has detected the newly added intermediate CA and updated its key and certs accordingly";

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_GRACE: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 5;

/// How to run istiod.
#[derive(Debug, Clone)]
pub struct IstiodOptions {
    /// The mesh's trust domain (`meshConfig.trustDomain`), e.g. `cluster.local`.
    pub trust_domain: String,
    /// The istiod version, one of [`crate::binaries::ISTIO_VERSIONS`] (default the newest,
    /// [`crate::binaries::ISTIO_VERSION`]). The Deployment's image tag and
    /// `app.kubernetes.io/version` label name it, as Istio's Helm chart does.
    pub version: String,
    /// `ISTIO_MULTIROOT_MESH` (default true): hot reload of a `root-cert.pem` that only grew
    /// or only shrank.
    pub multi_root: bool,
    /// Extra environment variables (after the defaults, so they win).
    pub env: Vec<(String, String)>,
}

impl IstiodOptions {
    /// Defaults for a mesh with trust domain `trust_domain`.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            version: crate::binaries::ISTIO_VERSION.to_owned(),
            multi_root: true,
            env: Vec::new(),
        }
    }

    /// Runs istiod `version` (one of [`crate::binaries::ISTIO_VERSIONS`]).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets `ISTIO_MULTIROOT_MESH`.
    pub fn multi_root(mut self, on: bool) -> Self {
        self.multi_root = on;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// istiod's listeners (all on 127.0.0.1), by the role of the in-cluster port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IstiodPorts {
    /// `--httpAddr` (8080): `/ready`, debug endpoints.
    pub http: u16,
    /// `--grpcAddr` (15010): plaintext XDS.
    pub grpc: u16,
    /// `--secureGRPCAddr` (15012): XDS and the CA over TLS.
    pub secure_grpc: u16,
    /// `--httpsAddr` (15017): webhooks.
    pub https: u16,
    /// `--monitoringAddr` (15014): metrics.
    pub monitoring: u16,
}

impl IstiodPorts {
    fn pick() -> Result<Self> {
        let mut ports = Vec::new();
        while ports.len() < 5 {
            let p = process::pick_port()?;
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        Ok(Self {
            http: ports[0],
            grpc: ports[1],
            secure_grpc: ports[2],
            https: ports[3],
            monitoring: ports[4],
        })
    }
}

/// Which CA istiod started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaMode {
    /// The plug-in CA from `ROOT_CA_DIR` (with a file watcher).
    PlugIn,
    /// Its own self-signed CA in Secret `istio-ca-secret` (no file watcher).
    SelfSigned,
}

impl CaMode {
    /// The mode one istiod run logged (`None` until it has logged it).
    pub fn from_log(log: &str) -> Option<CaMode> {
        if log.contains(LOG_PLUGIN_CA) {
            Some(CaMode::PlugIn)
        } else if log.contains(LOG_SELF_SIGNED_CA) {
            Some(CaMode::SelfSigned)
        } else {
            None
        }
    }
}

type SpawnHook = Box<dyn Fn(&Process) + Send + Sync>;

struct Running {
    process: Option<Process>,
    ports: Option<IstiodPorts>,
    /// Length of the log file when the current process started.
    log_offset: u64,
    /// How long the current process took from spawn to ready.
    ready_in: Duration,
}

struct Shared {
    cluster: Cluster,
    client: kube::Client,
    binary: PathBuf,
    opts: IstiodOptions,
    dir: PathBuf,
    root_ca_dir: PathBuf,
    log: PathBuf,
    running: Mutex<Running>,
    restarts: AtomicU32,
    stopped: AtomicBool,
    restart_lock: tokio::sync::Mutex<()>,
    on_spawn: Option<SpawnHook>,
}

struct Handle {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        self.shared.kill();
    }
}

/// A running istiod for one cluster. Cheap to clone; the process (and its watches) stop when
/// [`Istiod::kill`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Istiod {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Istiod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Istiod")
            .field("cluster", &self.cluster_name())
            .field("pid", &self.pid())
            .field("ports", &self.ports())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections only swap values; a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Istiod {
    /// Prepares `cluster` (see the module docs) and starts istiod from `binary`; returns when it
    /// answers `/ready` and its secure gRPC port accepts connections.
    pub async fn start(cluster: &Cluster, binary: &Path, opts: IstiodOptions) -> Result<Istiod> {
        Self::start_with_hook(cluster, binary, opts, None).await
    }

    /// Like [`Istiod::start`]; `on_spawn` runs after every (re)start of the process (the
    /// testbed records the pid in its state file).
    pub(crate) async fn start_with_hook(
        cluster: &Cluster,
        binary: &Path,
        opts: IstiodOptions,
        on_spawn: Option<SpawnHook>,
    ) -> Result<Istiod> {
        let client = cluster.client().await?;
        prepare_cluster(&client, cluster.name(), &opts).await?;
        let dir = cluster.dir().join("istiod");
        let root_ca_dir = dir.join("cacerts");
        std::fs::create_dir_all(&root_ca_dir).map_err(Error::io("create", &root_ca_dir))?;
        let dir = std::fs::canonicalize(&dir).map_err(Error::io("resolve", &dir))?;
        let root_ca_dir = dir.join("cacerts");
        secret_volume::sync_once(&client, NAMESPACE, CACERTS, &root_ca_dir).await?;

        let shared = Arc::new(Shared {
            cluster: cluster.clone(),
            client: client.clone(),
            binary: binary.to_owned(),
            log: dir.join("istiod.log"),
            dir,
            root_ca_dir: root_ca_dir.clone(),
            opts,
            running: Mutex::new(Running {
                process: None,
                ports: None,
                log_offset: 0,
                ready_in: Duration::ZERO,
            }),
            restarts: AtomicU32::new(0),
            stopped: AtomicBool::new(false),
            restart_lock: tokio::sync::Mutex::new(()),
            on_spawn,
        });
        let handle = Arc::new(Handle {
            shared: shared.clone(),
            tasks: Mutex::new(Vec::new()),
        });
        shared.spawn_ready(false).await?;

        // The Deployment as it is now is what runs; later template changes restart.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
        let template = deployments
            .get_opt(DEPLOYMENT)
            .await?
            .map(|d| template_of(&d));
        let name = cluster.name().to_owned();
        let mirror = secret_volume::spawn_mirror(
            client.clone(),
            NAMESPACE,
            CACERTS,
            root_ca_dir,
            move || tracing::debug!(cluster = %name, "cacerts volume changed"),
        );
        let controller = tokio::spawn(deployment_controller(shared.clone(), template));
        {
            let mut tasks = lock(&handle.tasks);
            tasks.push(mirror.abort_handle());
            tasks.push(controller.abort_handle());
        }
        Ok(Istiod { handle })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The cluster's name.
    pub fn cluster_name(&self) -> &str {
        self.shared().cluster.name()
    }

    /// The trust domain it was started with.
    pub fn trust_domain(&self) -> &str {
        &self.shared().opts.trust_domain
    }

    /// The istiod version it runs.
    pub fn version(&self) -> &str {
        &self.shared().opts.version
    }

    /// The current process's pid (changes on every restart).
    pub fn pid(&self) -> Option<u32> {
        lock(&self.shared().running)
            .process
            .as_ref()
            .map(Process::pid)
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        let mut running = lock(&self.shared().running);
        running.process.as_mut().is_some_and(Process::is_running)
    }

    /// Its listeners.
    pub fn ports(&self) -> Option<IstiodPorts> {
        lock(&self.shared().running).ports
    }

    /// The secure gRPC (CA) address, `127.0.0.1:<port>`.
    pub fn secure_grpc_addr(&self) -> Result<SocketAddr> {
        let ports = self.ports().ok_or_else(|| {
            Error::Api(format!("istiod of {} is not running", self.cluster_name()))
        })?;
        Ok(SocketAddr::from(([127, 0, 0, 1], ports.secure_grpc)))
    }

    /// How many times the process was restarted (by [`Istiod::restart`] or the Deployment
    /// controller stand-in).
    pub fn restarts(&self) -> u32 {
        self.shared().restarts.load(Ordering::SeqCst)
    }

    /// How long the current process took from spawn until ready.
    pub fn ready_in(&self) -> Duration {
        lock(&self.shared().running).ready_in
    }

    /// Resident memory of the current process, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(process::rss_kib)
    }

    /// `DIR/<cluster>/istiod`, its working directory.
    pub fn dir(&self) -> &Path {
        &self.shared().dir
    }

    /// Its `ROOT_CA_DIR` (the mirrored `cacerts` volume).
    pub fn root_ca_dir(&self) -> &Path {
        &self.shared().root_ca_dir
    }

    /// Its log file (appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.shared().log
    }

    /// The whole log, across restarts.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.shared().log).unwrap_or_default()).into_owned()
    }

    /// The log of the current process only.
    pub fn current_log(&self) -> String {
        let offset = lock(&self.shared().running).log_offset;
        let all = std::fs::read(&self.shared().log).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(all.len());
        String::from_utf8_lossy(&all[start..]).into_owned()
    }

    /// How many lines of the whole log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Which CA the current process started with, once it has logged it.
    pub fn ca_mode(&self) -> Option<CaMode> {
        CaMode::from_log(&self.current_log())
    }

    /// Restarts the process (as a pod restart would: the volume is re-read first) and waits
    /// until the new one is ready.
    pub async fn restart(&self) -> Result<()> {
        self.handle.shared.restart().await
    }

    /// Stops the process gracefully and its watches.
    pub async fn stop(&self) {
        for t in lock(&self.handle.tasks).drain(..) {
            t.abort();
        }
        self.shared().stopped.store(true, Ordering::SeqCst);
        let p = lock(&self.shared().running).process.take();
        if let Some(mut p) = p {
            p.terminate(STOP_GRACE).await;
        }
    }

    /// Kills the process and stops its watches now.
    pub fn kill(&self) {
        for t in lock(&self.handle.tasks).drain(..) {
            t.abort();
        }
        self.shared().kill();
    }
}

impl Shared {
    fn kill(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let p = lock(&self.running).process.take();
        if let Some(mut p) = p {
            p.kill();
        }
    }

    fn spec(&self, ports: IstiodPorts) -> ProcessSpec {
        let addr = |p: u16| format!("127.0.0.1:{p}");
        let cluster = self.cluster.name();
        let mut spec =
            ProcessSpec::new(format!("{cluster}/istiod"), &self.binary, &self.log).args([
                "discovery".to_owned(),
                "--kubeconfig".to_owned(),
                self.cluster.kubeconfig_path().display().to_string(),
                "--httpAddr".to_owned(),
                addr(ports.http),
                "--grpcAddr".to_owned(),
                addr(ports.grpc),
                "--secureGRPCAddr".to_owned(),
                addr(ports.secure_grpc),
                "--httpsAddr".to_owned(),
                addr(ports.https),
                "--monitoringAddr".to_owned(),
                addr(ports.monitoring),
                "--ctrlz_address".to_owned(),
                "127.0.0.1".to_owned(),
                // 0: the kernel picks; the default 9876 would collide between clusters.
                "--ctrlz_port".to_owned(),
                "0".to_owned(),
            ]);
        for (k, v) in env_of(cluster, &self.root_ca_dir, &self.opts) {
            spec = spec.env(k, v);
        }
        spec.cwd = Some(self.dir.clone());
        spec
    }

    /// Spawns istiod and waits until ready; on a port conflict picks new ports. `same_ports`
    /// first tries the ports of the previous process (a restart).
    async fn spawn_ready(&self, same_ports: bool) -> Result<()> {
        let previous = lock(&self.running).ports.filter(|_| same_ports);
        for attempt in 1..=ATTEMPTS {
            let ports = match (attempt, previous) {
                (1, Some(p)) => p,
                _ => IstiodPorts::pick()?,
            };
            let spec = self.spec(ports);
            let offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            let started = Instant::now();
            match process::spawn_until_ready(spec, READY_TIMEOUT, || ready(ports)).await {
                Ok(p) => {
                    let ready_in = started.elapsed();
                    tracing::info!(
                        cluster = %self.cluster.name(),
                        pid = p.pid(),
                        secure_grpc = ports.secure_grpc,
                        ms = ready_in.as_millis() as u64,
                        "istiod ready"
                    );
                    if let Some(hook) = &self.on_spawn {
                        hook(&p);
                    }
                    let mut r = lock(&self.running);
                    r.process = Some(p);
                    r.ports = Some(ports);
                    r.log_offset = offset;
                    r.ready_in = ready_in;
                    return Ok(());
                }
                Err(e) if process::is_port_conflict(&e) => {
                    tracing::info!(cluster = %self.cluster.name(), attempt, "istiod port taken, picking others");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::PortsExhausted {
            name: format!("{}/istiod", self.cluster.name()),
            attempts: ATTEMPTS,
        })
    }

    async fn restart(&self) -> Result<()> {
        let _one_at_a_time = self.restart_lock.lock().await;
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        let old = lock(&self.running).process.take();
        if let Some(mut p) = old {
            p.terminate(STOP_GRACE).await;
        }
        // A new pod mounts the Secret as it is now.
        secret_volume::sync_once(&self.client, NAMESPACE, CACERTS, &self.root_ca_dir).await?;
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.spawn_ready(true).await?;
        self.restarts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The environment istiod runs with (also recorded in the Deployment).
fn env_of(cluster: &str, root_ca_dir: &Path, opts: &IstiodOptions) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("POD_NAMESPACE", NAMESPACE.to_owned()),
        ("POD_NAME", format!("istiod-{cluster}")),
        ("REVISION", "default".to_owned()),
        ("CLUSTER_ID", cluster.to_owned()),
        ("ROOT_CA_DIR", root_ca_dir.display().to_string()),
        ("ISTIO_MULTIROOT_MESH", opts.multi_root.to_string()),
        ("ISTIOD_CUSTOM_HOST", "localhost".to_owned()),
        ("PILOT_CERT_PROVIDER", "istiod".to_owned()),
        ("ENABLE_LEADER_ELECTION", "false".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in &opts.env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// `/ready` answers 200 and the secure gRPC port accepts connections.
async fn ready(ports: IstiodPorts) -> bool {
    let http = format!("127.0.0.1:{}", ports.http);
    let ok = matches!(crate::http::get(&http, "/ready", None).await, Ok(r) if r.status == 200);
    ok && tokio::net::TcpStream::connect(("127.0.0.1", ports.secure_grpc))
        .await
        .is_ok()
}

fn template_of(d: &Deployment) -> serde_json::Value {
    d.spec
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.template).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The Deployment controller's part: a changed pod template restarts the process.
async fn deployment_controller(shared: Arc<Shared>, mut last: Option<serde_json::Value>) {
    let api: Api<Deployment> = Api::namespaced(shared.client.clone(), NAMESPACE);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={DEPLOYMENT}"));
    let mut events = watcher(api.clone(), cfg).boxed();
    while let Some(event) = events.next().await {
        let d = match event {
            Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => d,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "istiod Deployment watch");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let template = template_of(&d);
        if last.as_ref() == Some(&template) {
            continue;
        }
        let first = last.is_none();
        last = Some(template);
        if first {
            continue;
        }
        tracing::info!(cluster = %shared.cluster.name(), "istiod pod template changed: restarting istiod");
        match shared.restart().await {
            Ok(()) => {
                let generation = d.metadata.generation.unwrap_or(0);
                let status = json!({"status": {
                    "observedGeneration": generation,
                    "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                }});
                if let Err(e) = api
                    .patch_status(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    tracing::debug!(error = %e, "istiod Deployment status");
                }
            }
            Err(e) => {
                tracing::error!(cluster = %shared.cluster.name(), error = %e, "istiod restart failed")
            }
        }
    }
}

/// Namespace, mesh config and Deployment object.
async fn prepare_cluster(client: &kube::Client, cluster: &str, opts: &IstiodOptions) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    ensure_trust_domain(client, &opts.trust_domain).await?;

    // The pod's view: the volume is mounted at /etc/cacerts.
    let env: Vec<serde_json::Value> = env_of(cluster, Path::new("/etc/cacerts"), opts)
        .into_iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": DEPLOYMENT,
            "namespace": NAMESPACE,
            "labels": {"app": "istiod", "istio.io/rev": "default", "app.kubernetes.io/version": opts.version},
            "annotations": {
                "testbed.federator.io/stand-in": "no pod runs on the testbed: pilot-discovery runs as a process, restarted when this pod template changes",
            },
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "istiod"}},
            "template": {
                "metadata": {"labels": {"app": "istiod", "istio.io/rev": "default"}},
                "spec": {
                    "containers": [{
                        "name": "discovery",
                        "image": format!("docker.io/istio/pilot:{}", opts.version),
                        "args": ["discovery"],
                        "env": env,
                        "volumeMounts": [{"name": "cacerts", "mountPath": "/etc/cacerts", "readOnly": true}],
                    }],
                    "volumes": [{"name": "cacerts", "secret": {"secretName": CACERTS, "optional": true}}],
                },
            },
        },
    });
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    deployments
        .patch(
            DEPLOYMENT,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&deployment),
        )
        .await?;
    Ok(())
}

/// Creates the mesh config ConfigMap with `trustDomain`, or sets `trustDomain` in an existing
/// one (keeping every other field).
pub async fn ensure_trust_domain(client: &kube::Client, trust_domain: &str) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    for _ in 0..5 {
        let Some(mut cm) = api.get_opt(MESH_CONFIGMAP).await? else {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(MESH_CONFIGMAP.into()),
                    ..ObjectMeta::default()
                },
                data: Some(
                    [(
                        MESH_KEY.to_owned(),
                        format!("trustDomain: {trust_domain}\n"),
                    )]
                    .into(),
                ),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mesh = cm
            .data
            .as_ref()
            .and_then(|d| d.get(MESH_KEY))
            .cloned()
            .unwrap_or_default();
        let Some(updated) = with_trust_domain(&mesh, trust_domain)? else {
            return Ok(());
        };
        cm.data
            .get_or_insert_with(Default::default)
            .insert(MESH_KEY.to_owned(), updated);
        match api
            .replace(MESH_CONFIGMAP, &PostParams::default(), &cm)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Api(format!(
        "could not set trustDomain in {NAMESPACE}/{MESH_CONFIGMAP}: it kept changing"
    )))
}

/// The mesh config YAML with `trustDomain` set, or `None` if it already is.
fn with_trust_domain(mesh: &str, trust_domain: &str) -> Result<Option<String>> {
    let mut value: serde_yaml::Value = if mesh.trim().is_empty() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        serde_yaml::from_str(mesh)?
    };
    let serde_yaml::Value::Mapping(map) = &mut value else {
        return Err(Error::Api(format!(
            "{NAMESPACE}/{MESH_CONFIGMAP} key {MESH_KEY} is not a YAML mapping"
        )));
    };
    let key = serde_yaml::Value::from("trustDomain");
    if map.get(&key).and_then(|v| v.as_str()) == Some(trust_domain) {
        return Ok(None);
    }
    map.insert(key, serde_yaml::Value::from(trust_domain));
    Ok(Some(serde_yaml::to_string(&value)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_is_set_and_other_fields_kept() {
        assert_eq!(
            with_trust_domain("", "east.example").unwrap().unwrap(),
            "trustDomain: east.example\n"
        );
        assert!(
            with_trust_domain("trustDomain: east.example\n", "east.example")
                .unwrap()
                .is_none()
        );
        let out = with_trust_domain(
            "trustDomain: cluster.local\ncaCertificates:\n- pem: x\n  trustDomains: [a]\n",
            "east.example",
        )
        .unwrap()
        .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["trustDomain"].as_str(), Some("east.example"));
        assert_eq!(v["caCertificates"][0]["pem"].as_str(), Some("x"));
        assert!(with_trust_domain("- a list", "x").is_err());
    }

    #[test]
    fn env_has_what_istiod_needs() {
        let env = env_of(
            "c1",
            Path::new("/abs/cacerts"),
            &IstiodOptions::new("td").multi_root(false).env("X", "y"),
        );
        let get = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ROOT_CA_DIR"), Some("/abs/cacerts"));
        assert_eq!(get("ISTIO_MULTIROOT_MESH"), Some("false"));
        assert_eq!(get("CLUSTER_ID"), Some("c1"));
        assert_eq!(get("ENABLE_LEADER_ELECTION"), Some("false"));
        assert_eq!(get("X"), Some("y"));
    }

    #[test]
    fn ports_are_distinct() {
        let p = IstiodPorts::pick().unwrap();
        let mut all = vec![p.http, p.grpc, p.secure_grpc, p.https, p.monitoring];
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 5);
    }
}
