//! A real node for a testbed cluster: its own containerd, kubelet, kube-scheduler and
//! kube-controller-manager, so Deployments get Pods and Pods run (see `docs/testbed.md`,
//! "Nodes").
//!
//! Per node, under `DIR/<cluster>/node/` and under names derived from the testbed directory
//! and the cluster ([`host::node_id`]), so two testbeds on one machine never meet:
//!
//! * a **mount namespace** of its own, held by a `sleep` process, which every node process
//!   enters (`nsenter`): the host directories the stack writes into whatever it is told
//!   (`/var/lib/kubelet/device-plugins`, `/var/log/containers`, `/run/containerd`,
//!   `/var/lib/cni`, `/run/netns`) are overlays with their upper layer under the node's
//!   directory, and the six `/proc/sys` files the kubelet rewrites at start are covered by
//!   plain files ([`host::KUBELET_SYSCTLS`]); the kubelet's and containerd's mounts (Secret
//!   volumes, root-dir, network namespaces) exist only in there and vanish with it;
//! * a **cgroup subtree** `federator-testbed-<id>` at the top of every hierarchy, the
//!   kubelet's `cgroupRoot` (the machine's own cgroups are never touched);
//! * a **bridge** `fedtb<n>` with address `10.x.y.1/24` in `10.240.0.0/12`, the Pod network
//!   (CNI bridge plugin, no gateway, no masquerading, no sysctl), whose `.1` is also the
//!   `kubernetes` Service's ClusterIP, forwarded to the apiserver, and which also forwards,
//!   for every other cluster of the testbed, that apiserver's port number to it ([`proxy`],
//!   [`Cluster::server_from`]);
//! * containerd 1.6 (Debian) with runc, the overlayfs snapshotter and a pause image made from
//!   Debian's static `catatonit`; the testbed imports image archives into it (`ctr images
//!   import`), nothing is ever pulled;
//! * the kubelet (node `<cluster>-node`, client certificate `system:node:<node>` in
//!   `system:nodes`, so the apiserver's Node authorizer and NodeRestriction apply), the
//!   scheduler (`system:kube-scheduler`) and the controller-manager
//!   (`system:kube-controller-manager`, with per-controller ServiceAccount credentials).
//!
//! [`Node::kill`] (also on drop) and [`Node::stop`] remove everything: processes, the Pods'
//! containers (found through the cgroup subtree), containerd's shims (which outlive
//! containerd; found by their `-address`), the cgroups, the bridge (only if its alias names
//! this node). [`cleanup_leftovers`] does the same from the state file after the owner died.

pub mod config;
pub mod host;
pub mod istiod;
mod proxy;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node as NodeObject, ServiceAccount};
use kube::api::Api;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::image::{self, Archive, ImageSpec};
use crate::process::{self, Process, ProcessSpec, Slot};
use crate::{Error, Result};

use config::{KubeletPorts, NodeLayout};
pub use host::NodeNetwork;

/// How long a node may take from containerd's start to Node `Ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The name of the pause (sandbox) image every node gets.
pub const PAUSE_IMAGE: &str = "localhost/federator-testbed/pause:catatonit";

/// Which images a node imports at start (besides the pause image).
#[derive(Debug, Clone, Default)]
pub enum NodeImages {
    /// The project's images (`cluster-agent`, `federator`), built from the binaries in the
    /// given directory, or, with `None`, next to the running executable (`target/<profile>/`,
    /// also for tests in `target/<profile>/deps/`). A missing binary is an error.
    #[default]
    Project,
    /// [`NodeImages::Project`] from this directory.
    ProjectFrom(PathBuf),
    /// These archives.
    Archives(Vec<PathBuf>),
    /// Nothing but the pause image.
    None,
}

/// Options of the nodes of a testbed.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Images to import into every node.
    pub images: NodeImages,
    /// The kubelet's `syncFrequency` (`None`: its default, 1 min). It bounds how long a
    /// changed Secret takes to reach a Pod's volume (60–90 s at the default, measured).
    pub sync_frequency: Option<Duration>,
}

/// The tools a node runs, from Debian packages, and the node binaries from `tools/build.sh
/// nodes`.
#[derive(Debug, Clone)]
pub struct NodeBinaries {
    pub(crate) kubelet: PathBuf,
    pub(crate) scheduler: PathBuf,
    pub(crate) controller_manager: PathBuf,
    pub(crate) containerd: PathBuf,
    pub(crate) ctr: PathBuf,
    pub(crate) catatonit: PathBuf,
    pub(crate) nsenter: PathBuf,
    pub(crate) unshare: PathBuf,
    pub(crate) sleep: PathBuf,
    pub(crate) cni_bin_dir: PathBuf,
}

const DEBIAN_PACKAGES: &str = "containerd runc containernetworking-plugins catatonit iproute2";

/// A tool on `PATH` (or in the usual system directories).
pub(crate) fn find_tool(name: &'static str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(Error::MissingTool {
            name,
            packages: DEBIAN_PACKAGES,
        })
}

impl NodeBinaries {
    /// Finds everything or says what to install.
    pub fn locate(binaries: &crate::Binaries) -> Result<Self> {
        for t in ["runc", "containerd-shim-runc-v2", "ip", "mount"] {
            find_tool(t)?;
        }
        let cni_bin_dir = PathBuf::from("/usr/lib/cni");
        for plugin in ["bridge", "host-local", "loopback"] {
            if !cni_bin_dir.join(plugin).is_file() {
                return Err(Error::MissingTool {
                    name: "CNI plugins (/usr/lib/cni)",
                    packages: DEBIAN_PACKAGES,
                });
            }
        }
        Ok(Self {
            kubelet: binaries.kubelet()?,
            scheduler: binaries.kube_scheduler()?,
            controller_manager: binaries.kube_controller_manager()?,
            containerd: find_tool("containerd")?,
            ctr: find_tool("ctr")?,
            catatonit: find_tool("catatonit")?,
            nsenter: find_tool("nsenter")?,
            unshare: find_tool("unshare")?,
            sleep: find_tool("sleep")?,
            cni_bin_dir,
        })
    }
}

/// A node as recorded in the state file: enough to remove it after its owner died.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// The cluster.
    pub cluster: String,
    /// The node's id ([`host::node_id`]).
    pub id: String,
    /// The node's network (bridge).
    pub network: NodeNetwork,
    /// The cgroup subtree's name.
    pub cgroup: String,
    /// containerd's socket (its shims name it).
    pub containerd_socket: PathBuf,
}

/// What must exist before the cluster's apiserver starts: the network (its address goes into
/// the serving certificate and the service range) and the cgroups.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub(crate) info: NodeInfo,
    pub(crate) layout: NodeLayout,
}

impl Prepared {
    /// The node's network.
    pub fn network(&self) -> &NodeNetwork {
        &self.info.network
    }
    /// The state-file record.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }
}

/// Claims the node's network and cgroups (for cluster `cluster` of the testbed in `dir`).
/// On error nothing is left behind.
pub(crate) fn prepare(dir: &Path, cluster: &str) -> Result<Prepared> {
    host::check_node_dir(dir)?;
    let id = host::node_id(dir, cluster);
    let layout = NodeLayout::new(dir.join(cluster).join("node"));
    let socket = layout.containerd_socket();
    if socket.as_os_str().len() > 100 {
        return Err(Error::Dir(format!(
            "{}: too long for a unix socket path; use a shorter testbed directory",
            socket.display()
        )));
    }
    let cgroup = host::cgroup_name(&id);
    let network = host::claim_network(&id)?;
    let info = NodeInfo {
        cluster: cluster.to_owned(),
        id,
        network,
        cgroup,
        containerd_socket: socket,
    };
    if let Err(e) = host::create_cgroups(&info.cgroup) {
        cleanup_leftovers(&info);
        return Err(e);
    }
    Ok(Prepared { info, layout })
}

/// Removes what a node left on the machine, from its record: the Pods' processes (through its
/// cgroups), its containerd shims, its cgroups, its bridge (if the alias says it is this
/// node's). For processes the testbed started itself, see [`crate::State::kill_all`].
/// Returns what could not be removed.
pub fn cleanup_leftovers(info: &NodeInfo) -> Vec<String> {
    let mut problems = Vec::new();
    // Pods first (so shims have nothing to restart), then the shims, then the cgroups.
    let _ = host::cgroup_pids(&info.cgroup)
        .into_iter()
        .map(|pid| {
            if let Some(p) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        })
        .count();
    host::kill_shims(&info.containerd_socket, Duration::from_secs(5));
    problems.extend(host::remove_cgroups(&info.cgroup, Duration::from_secs(10)));
    if let Err(e) = host::release_network(&info.network, &info.id) {
        problems.push(format!("bridge {}: {e}", info.network.bridge));
    }
    problems
}

/// Whether anything of a node is still on the machine (for tests of the clean-up): its
/// cgroups, its bridge, containerd's shims, a listener on its bridge address (a forwarder).
pub fn leftovers(info: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    if host::cgroups_exist(&info.cgroup) {
        out.push(format!("cgroup {}", info.cgroup));
    }
    if host::bridge_is_ours(&info.network.bridge, &info.id) {
        out.push(format!("bridge {}", info.network.bridge));
    }
    let shims = host::shims_of(&info.containerd_socket);
    if !shims.is_empty() {
        out.push(format!("shims {shims:?}"));
    }
    let gateway = info.network.gateway();
    let listeners = host::listening_ports(gateway);
    if !listeners.is_empty() {
        out.push(format!("listeners on {gateway}: ports {listeners:?}"));
    }
    out
}

/// The machine-wide places a node could touch, as they are now: the kernel settings the
/// kubelet writes and `net.ipv4.ip_forward`, whether the host directories the node stack
/// writes to by default exist, and the mounts and processes that mention a directory. Taken
/// before and after a testbed with nodes, they must be equal (see `testbed/tests/nodes.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// `(key, value)` of the kubelet's sysctls and `net.ipv4.ip_forward`.
    pub sysctls: Vec<(String, String)>,
    /// `(path, exists)` of the host directories a kubelet, containerd or CNI would create.
    pub paths: Vec<(String, bool)>,
    /// Lines of `/proc/self/mountinfo` that mention the directory.
    pub mounts: Vec<String>,
    /// Processes whose command line mentions the directory: `(pid, command line)`.
    pub processes: Vec<(u32, String)>,
    /// Network namespaces under `/run/netns` and `/var/run/netns`.
    pub netns: Vec<String>,
}

/// Host directories a kubelet, containerd or the CNI plugins create by default.
pub const DEFAULT_HOST_PATHS: [&str; 9] = [
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/opt/containerd",
    "/usr/libexec/kubernetes",
    "/run/netns",
];

impl HostState {
    /// The state now, with mounts and processes filtered on `dir`.
    pub fn now(dir: &Path) -> Self {
        let d = dir.to_string_lossy().into_owned();
        let mut sysctls = host::machine_sysctls();
        if let Ok(v) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
            sysctls.push(("net.ipv4.ip_forward".into(), v.trim().to_owned()));
        }
        let paths = DEFAULT_HOST_PATHS
            .iter()
            .map(|p| ((*p).to_owned(), Path::new(p).exists()))
            .collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&d))
            .map(str::to_owned)
            .collect();
        let me = std::process::id();
        let processes = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != me && process::pid_alive(*pid))
            .filter_map(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.contains(&d).then_some((pid, cmd))
            })
            .collect();
        let mut netns: Vec<String> = ["/run/netns", "/var/run/netns"]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| e.path().display().to_string())
            .collect();
        netns.sort();
        netns.dedup();
        HostState {
            sysctls,
            paths,
            mounts,
            processes,
            netns,
        }
    }
}

struct Inner {
    cluster: Cluster,
    name: String,
    info: NodeInfo,
    layout: NodeLayout,
    bins: NodeBinaries,
    holder: Slot,
    containerd: Slot,
    kubelet: Slot,
    scheduler: Slot,
    controller_manager: Slot,
    /// The forwarders on the bridge address: `kubernetes` (443) and one per other cluster.
    proxies: Mutex<Vec<tokio::task::AbortHandle>>,
    imported: Mutex<Vec<String>>,
    import_lock: tokio::sync::Mutex<()>,
    ready_in: Mutex<Duration>,
    cleaned: std::sync::atomic::AtomicBool,
}

/// A running node. Cheap to clone; every clone controls the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("network", &self.inner.info.network)
            .finish_non_exhaustive()
    }
}

/// The processes of a node, by role, as `(role, pid, executable)`.
pub type NodeProcesses = Vec<(&'static str, u32, PathBuf)>;

fn ns_spec(
    holder: u32,
    nsenter: &Path,
    name: String,
    binary: &Path,
    log: PathBuf,
    args: Vec<String>,
) -> ProcessSpec {
    ProcessSpec::new(name, nsenter, log)
        .arg(format!("--mount=/proc/{holder}/ns/mnt"))
        .arg("--")
        .arg(binary)
        .args(args)
}

impl Node {
    /// Starts the node of `cluster` (prepared with [`prepare`]) and returns once the Node is
    /// `Ready`, the controller-manager has made the `default` ServiceAccount and
    /// `kube-root-ca.crt`, and the images are imported. The bridge address forwards port 443
    /// to `cluster`'s apiserver and, for each of `others` (the testbed's other clusters), that
    /// apiserver's port to it ([`Cluster::server_from`]). `on_spawn` is told every process it
    /// starts (for the state file). On error, everything of the node is removed again.
    pub(crate) async fn start(
        cluster: &Cluster,
        others: &[Cluster],
        prepared: Prepared,
        bins: &NodeBinaries,
        opts: &NodeOptions,
        archives: &[Archive],
        on_spawn: &(dyn Fn(&str, u32, &Path) + Sync),
    ) -> Result<Node> {
        let started = Instant::now();
        let Prepared { info, layout } = prepared;
        let name = format!("{}-node", cluster.name());
        for d in [
            layout.dir.clone(),
            layout.containerd_root(),
            layout.containerd_state(),
            layout.runc_root(),
            layout.cni_conf_dir(),
            layout.cni_ipam_dir(),
            layout.kubelet_root(),
            layout.pod_logs(),
            layout.host_dir(),
            layout.images_dir(),
            layout.dir.join("pki"),
        ] {
            std::fs::create_dir_all(&d).map_err(Error::io("create", &d))?;
        }
        let log = |n: &str| layout.dir.join(format!("{n}.log"));
        let c = cluster.name();

        // The mount namespace, held by a sleeping process.
        let holder = Process::spawn(
            ProcessSpec::new(
                format!("{c}/node-namespace"),
                &bins.unshare,
                log("namespace"),
            )
            .args(["--mount", "--propagation", "private", "--"])
            .arg(&bins.sleep)
            .arg("infinity"),
        )?;
        let holder_pid = holder.pid();
        on_spawn("node-namespace", holder_pid, &bins.sleep);
        let node = Node {
            inner: Arc::new(Inner {
                cluster: cluster.clone(),
                name: name.clone(),
                info: info.clone(),
                layout: layout.clone(),
                bins: bins.clone(),
                holder: Slot::new(holder),
                containerd: Slot::default(),
                kubelet: Slot::default(),
                scheduler: Slot::default(),
                controller_manager: Slot::default(),
                proxies: Mutex::new(Vec::new()),
                imported: Mutex::new(Vec::new()),
                import_lock: tokio::sync::Mutex::new(()),
                ready_in: Mutex::new(Duration::ZERO),
                cleaned: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        let result = node
            .bring_up(holder_pid, others, opts, archives, on_spawn, started)
            .await;
        match result {
            Ok(ready_in) => {
                *lock(&node.inner.ready_in) = ready_in;
                Ok(node)
            }
            Err(e) => {
                node.kill();
                Err(e)
            }
        }
    }

    async fn bring_up(
        &self,
        holder: u32,
        others: &[Cluster],
        opts: &NodeOptions,
        archives: &[Archive],
        on_spawn: &(dyn Fn(&str, u32, &Path) + Sync),
        started: Instant,
    ) -> Result<Duration> {
        let i = &self.inner;
        let layout = &i.layout;
        let bins = &i.bins;
        let c = i.cluster.name();
        let log = |n: &str| layout.dir.join(format!("{n}.log"));
        let own_ns = host::mount_namespace_of(std::process::id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while host::mount_namespace_of(holder) == own_ns {
            if Instant::now() > deadline {
                return Err(Error::Node(format!(
                    "the node's mount namespace did not appear; log {}",
                    log("namespace").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        host::prepare_namespace(holder, &layout.host_dir())?;

        // The `kubernetes` Service, forwarded to the apiserver; the other clusters'
        // apiservers, each on its own port number.
        let gateway = i.info.network.gateway();
        let forwards = std::iter::once((c, 443, i.cluster.port()))
            .chain(others.iter().map(|o| (o.name(), o.port(), o.port())));
        for (target, listen, port) in forwards {
            let task = proxy::spawn(
                target,
                SocketAddr::from((gateway, listen)),
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            )
            .await?;
            lock(&i.proxies).push(task.abort_handle());
        }

        // containerd.
        let pause_archive = layout.images_dir().join("pause.oci.tar");
        let pause = ImageSpec::base(PAUSE_IMAGE, &bins.catatonit)?
            .entrypoint(["/usr/local/bin/catatonit", "-P"])
            .user(65535, 65535)
            .workdir("/");
        let pause = image::build(&pause, &pause_archive)?;
        write(
            &layout.containerd_config(),
            &config::containerd_toml(layout, PAUSE_IMAGE, &bins.cni_bin_dir),
        )?;
        write(
            &layout.cni_conf_dir().join("10-federator-testbed.conflist"),
            &serde_json::to_string_pretty(&config::cni_conflist(&i.info.network, layout))?,
        )?;
        let socket = layout.containerd_socket();
        let spec = ns_spec(
            holder,
            &bins.nsenter,
            format!("{c}/containerd"),
            &bins.containerd,
            log("containerd"),
            vec![
                "--config".into(),
                layout.containerd_config().to_string_lossy().into_owned(),
            ],
        );
        let ctr = bins.ctr.clone();
        let sock = socket.clone();
        let p = process::spawn_until_ready(spec, Duration::from_secs(30), || {
            let (ctr, sock) = (ctr.clone(), sock.clone());
            async move { ctr_ok(&ctr, &sock, &["version"]).await }
        })
        .await?;
        on_spawn("containerd", p.pid(), &bins.containerd);
        i.containerd.put(p);
        self.import(&pause).await?;

        // The kubelet.
        let ports = KubeletPorts {
            api: process::pick_port()?,
            healthz: process::pick_port()?,
        };
        let kubelet_kc = layout.dir.join("kubelet.kubeconfig");
        i.cluster.write_kubeconfig_for_user(
            &format!("system:node:{}", i.name),
            &["system:nodes"],
            &kubelet_kc,
        )?;
        let client_ca = layout.dir.join("client-ca.crt");
        write(&client_ca, &i.cluster.client_ca_pem())?;
        let cfg = config::kubelet_config(
            layout,
            &i.info.cgroup,
            &client_ca,
            ports,
            opts.sync_frequency,
        );
        write(&layout.kubelet_config(), &serde_yaml::to_string(&cfg)?)?;
        let spec = ns_spec(
            holder,
            &bins.nsenter,
            format!("{c}/kubelet"),
            &bins.kubelet,
            log("kubelet"),
            vec![
                format!("--config={}", layout.kubelet_config().display()),
                format!("--kubeconfig={}", kubelet_kc.display()),
                format!("--root-dir={}", layout.kubelet_root().display()),
                format!("--cert-dir={}", layout.dir.join("pki").display()),
                format!("--hostname-override={}", i.name),
                format!("--node-ip={gateway}"),
                "--v=1".into(),
            ],
        );
        let kubelet = Process::spawn(spec)?;
        on_spawn("kubelet", kubelet.pid(), &bins.kubelet);
        i.kubelet.put(kubelet);

        // The scheduler and the controller-manager, with their own identities.
        for (role, binary, user, extra) in [
            (
                "kube-scheduler",
                &bins.scheduler,
                "system:kube-scheduler",
                Vec::new(),
            ),
            (
                "kube-controller-manager",
                &bins.controller_manager,
                "system:kube-controller-manager",
                vec![
                    "--use-service-account-credentials=true".to_owned(),
                    format!(
                        "--service-account-private-key-file={}",
                        i.cluster.dir().join("sa.key").display()
                    ),
                    format!(
                        "--root-ca-file={}",
                        i.cluster.dir().join("ca.crt").display()
                    ),
                    "--controllers=*".to_owned(),
                ],
            ),
        ] {
            let kc = layout.dir.join(format!("{role}.kubeconfig"));
            i.cluster.write_kubeconfig_for_user(user, &[], &kc)?;
            let cert_dir = layout.dir.join("pki").join(role);
            std::fs::create_dir_all(&cert_dir).map_err(Error::io("create", &cert_dir))?;
            let mut args = vec![
                format!("--kubeconfig={}", kc.display()),
                format!("--authentication-kubeconfig={}", kc.display()),
                format!("--authorization-kubeconfig={}", kc.display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", process::pick_port()?),
                format!("--cert-dir={}", cert_dir.display()),
            ];
            args.extend(extra);
            let spec = ns_spec(
                holder,
                &bins.nsenter,
                format!("{c}/{role}"),
                binary,
                log(role),
                args,
            );
            let p = Process::spawn(spec)?;
            on_spawn(role, p.pid(), binary);
            if role == "kube-scheduler" {
                i.scheduler.put(p);
            } else {
                i.controller_manager.put(p);
            }
        }

        // Images, while the kubelet registers.
        for a in archives {
            self.import(a).await?;
        }

        // Ready: the Node, and the controller-manager's first objects.
        let client = i.cluster.client().await?;
        let nodes: Api<NodeObject> = Api::all(client.clone());
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let deadline = started + READY_TIMEOUT;
        loop {
            for (what, slot, l) in [
                ("kubelet", &i.kubelet, "kubelet"),
                ("kube-scheduler", &i.scheduler, "kube-scheduler"),
                (
                    "kube-controller-manager",
                    &i.controller_manager,
                    "kube-controller-manager",
                ),
                ("containerd", &i.containerd, "containerd"),
            ] {
                if !slot.is_running() {
                    return Err(Error::ExitedEarly {
                        name: format!("{c}/{what}"),
                        status: "exited".into(),
                        log: log(l),
                        tail: process::log_tail(&log(l), 30),
                    });
                }
            }
            let node_ready = nodes
                .get_opt(&i.name)
                .await
                .ok()
                .flatten()
                .is_some_and(|n| is_ready(&n));
            let kcm_ready = node_ready
                && sas.get_opt("default").await.ok().flatten().is_some()
                && cms
                    .get_opt("kube-root-ca.crt")
                    .await
                    .ok()
                    .flatten()
                    .is_some();
            if kcm_ready {
                let took = started.elapsed();
                tracing::info!(cluster = c, node = %i.name, ms = took.as_millis() as u64, "node ready");
                return Ok(took);
            }
            if Instant::now() > deadline {
                let (what, l) = if node_ready {
                    (
                        "the controller-manager made no default ServiceAccount",
                        "kube-controller-manager",
                    )
                } else {
                    ("the Node is not Ready", "kubelet")
                };
                return Err(Error::NotReady {
                    name: format!("{c}/node ({what})"),
                    secs: READY_TIMEOUT.as_secs(),
                    log: log(l),
                    tail: process::log_tail(&log(l), 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Imports an image archive into the node's containerd (namespace `k8s.io`, where the
    /// kubelet sees it), once per image name.
    pub async fn import(&self, archive: &Archive) -> Result<Duration> {
        let _serial = self.inner.import_lock.lock().await;
        if lock(&self.inner.imported).contains(&archive.digest) {
            return Ok(Duration::ZERO);
        }
        let t = Instant::now();
        let out = tokio::process::Command::new(&self.inner.bins.ctr)
            .arg("--address")
            .arg(self.inner.layout.containerd_socket())
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(&archive.path)
            .output()
            .await
            .map_err(|e| Error::Node(format!("ctr images import: {e}")))?;
        if !out.status.success() {
            return Err(Error::Node(format!(
                "importing {} into {}: {}",
                archive.path.display(),
                self.inner.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let took = t.elapsed();
        tracing::info!(node = %self.inner.name, image = %archive.name, ms = took.as_millis() as u64, "imported");
        lock(&self.inner.imported).push(archive.digest.clone());
        Ok(took)
    }

    /// The images in the node's containerd (`ctr images list -q`).
    pub async fn images(&self) -> Result<Vec<String>> {
        let out = tokio::process::Command::new(&self.inner.bins.ctr)
            .arg("--address")
            .arg(self.inner.layout.containerd_socket())
            .args(["--namespace", "k8s.io", "images", "list", "-q"])
            .output()
            .await
            .map_err(|e| Error::Node(format!("ctr images list: {e}")))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// The Node object's name (`<cluster>-node`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The node's network.
    pub fn network(&self) -> &NodeNetwork {
        &self.inner.info.network
    }

    /// The state-file record.
    pub fn info(&self) -> &NodeInfo {
        &self.inner.info
    }

    /// The node's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.layout.dir
    }

    /// containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.inner.layout.containerd_socket()
    }

    /// From containerd's start to Node `Ready` (with images imported).
    pub fn ready_in(&self) -> Duration {
        *lock(&self.inner.ready_in)
    }

    /// The node's processes: the namespace holder, containerd, the kubelet, the scheduler, the
    /// controller-manager, and containerd's shims.
    pub fn processes(&self) -> NodeProcesses {
        let i = &self.inner;
        let mut out = Vec::new();
        for (role, slot, bin) in [
            ("node-namespace", &i.holder, &i.bins.sleep),
            ("containerd", &i.containerd, &i.bins.containerd),
            ("kubelet", &i.kubelet, &i.bins.kubelet),
            ("kube-scheduler", &i.scheduler, &i.bins.scheduler),
            (
                "kube-controller-manager",
                &i.controller_manager,
                &i.bins.controller_manager,
            ),
        ] {
            if let Some(pid) = slot.pid() {
                out.push((role, pid, bin.clone()));
            }
        }
        for pid in host::shims_of(&i.layout.containerd_socket()) {
            out.push((
                "containerd-shim",
                pid,
                PathBuf::from("containerd-shim-runc-v2"),
            ));
        }
        out
    }

    /// The log of container `container` of Pod `namespace/pod` (its latest run, as the
    /// kubelet writes it under `podLogsDir`: CRI format, one `<time> <stream> <tag> <line>`
    /// per line).
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        let prefix = format!("{namespace}_{pod}_");
        let Ok(entries) = std::fs::read_dir(self.inner.layout.pod_logs()) else {
            return String::new();
        };
        let mut out = String::new();
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let dir = e.path().join(container);
            let mut logs: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| {
                    let n = f.file_name().to_string_lossy().into_owned();
                    n.strip_suffix(".log")?.parse().ok().map(|k| (k, f.path()))
                })
                .collect();
            logs.sort();
            if let Some((_, p)) = logs.last() {
                out.push_str(&std::fs::read_to_string(p).unwrap_or_default());
            }
        }
        out
    }

    /// Stops the node: scheduler and controller-manager, then the kubelet (SIGTERM, SIGKILL
    /// after 5 s), then everything else as [`Node::kill`] does.
    pub async fn stop(&self) {
        let i = &self.inner;
        futures::future::join(
            i.scheduler.stop(Duration::from_secs(5)),
            i.controller_manager.stop(Duration::from_secs(5)),
        )
        .await;
        i.kubelet.stop(Duration::from_secs(5)).await;
        self.kill();
    }

    /// Removes the node now: every process (the Pods' through the cgroups, containerd's shims
    /// by their socket), the cgroups, the bridge, the forwarders. The mount namespace, with
    /// every mount made in it, goes with its last process.
    pub fn kill(&self) {
        self.inner.teardown();
    }
}

impl Inner {
    fn teardown(&self) {
        if self.cleaned.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        for t in lock(&self.proxies).drain(..) {
            t.abort();
        }
        self.scheduler.kill();
        self.controller_manager.kill();
        self.kubelet.kill();
        // The Pods' processes before containerd, so no shim restarts anything.
        let _ = host::remove_cgroups(&self.info.cgroup, Duration::ZERO);
        self.containerd.kill();
        self.holder.kill();
        let problems = cleanup_leftovers(&self.info);
        if !problems.is_empty() {
            tracing::warn!(node = %self.name, ?problems, "node clean-up left something behind");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn is_ready(n: &NodeObject) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections only swap values; a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io("write", path))
}

async fn ctr_ok(ctr: &Path, socket: &Path, args: &[&str]) -> bool {
    tokio::process::Command::new(ctr)
        .arg("--address")
        .arg(socket)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}
