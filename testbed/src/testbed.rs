//! The whole testbed: etcd, the clusters, optionally OpenBao and any extra processes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bao::Bao;
use crate::binaries::Binaries;
use crate::cluster::Cluster;
use crate::etcd::{self, Etcd};
use crate::istiod::{Istiod, IstiodOptions};
use crate::node::{self, Node, NodeBinaries, NodeImages, NodeOptions};
use crate::process::Process;
use crate::state::{self, BaoInfo, ClusterInfo, STATE_FILE, State};
use crate::{Error, Result};

/// What to start.
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// Cluster names (each gets `DIR/<name>/`).
    pub clusters: Vec<String>,
    /// Where files go. `None`: a temporary directory removed when the testbed is dropped
    /// (kept if the environment variable `TESTBED_KEEP_DIR` is set, for post-mortems).
    pub dir: Option<PathBuf>,
    /// Also start an OpenBao dev server.
    pub bao: bool,
    /// Where the binaries are; `None`: [`crate::default_bin_dir`].
    pub bin_dir: Option<PathBuf>,
    /// The clusters that get a real node (see [`crate::node`]); the others have only an
    /// apiserver, as before.
    pub nodes: Vec<String>,
    /// How the nodes run.
    pub node: NodeOptions,
    /// Extra flags for every apiserver (e.g. to trim memory for a large fleet).
    pub apiserver_args: Vec<String>,
    /// Start at most this many apiservers at a time (`None`: all at once). On 2 cores, two
    /// dozen apiservers starting together can outlast their readiness timeout.
    pub max_parallel_starts: Option<usize>,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        Self::clusters(1)
    }
}

impl TestbedOptions {
    /// `n` clusters named `cluster-1` .. `cluster-n`.
    pub fn clusters(n: usize) -> Self {
        Self::named((1..=n).map(|i| format!("cluster-{i}")))
    }

    /// Clusters with the given names.
    pub fn named<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            clusters: names.into_iter().map(Into::into).collect(),
            dir: None,
            bao: false,
            bin_dir: None,
            nodes: Vec::new(),
            node: NodeOptions::default(),
            apiserver_args: Vec::new(),
            max_parallel_starts: None,
        }
    }

    /// Puts the files in `dir` (created if missing; must be empty or a stale testbed's).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Passes `args` to every apiserver, after the testbed's own flags.
    pub fn apiserver_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.apiserver_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Starts at most `n` apiservers at a time (at least one).
    pub fn max_parallel_starts(mut self, n: usize) -> Self {
        self.max_parallel_starts = Some(n.max(1));
        self
    }

    /// Also starts OpenBao.
    pub fn with_bao(mut self) -> Self {
        self.bao = true;
        self
    }

    /// Gives every cluster a node (needs `tools/build.sh nodes` and the Debian packages
    /// `.ci/run` installs).
    pub fn with_nodes(mut self) -> Self {
        self.nodes = self.clusters.clone();
        self
    }

    /// Gives the named clusters a node.
    pub fn with_nodes_in<I, S>(mut self, clusters: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes = clusters.into_iter().map(Into::into).collect();
        self
    }

    /// Which images the nodes import.
    pub fn node_images(mut self, images: NodeImages) -> Self {
        self.node.images = images;
        self
    }

    /// The kubelets' `syncFrequency` (default: the kubelet's, 1 min).
    pub fn kubelet_sync_frequency(mut self, every: Duration) -> Self {
        self.node.sync_frequency = Some(every);
        self
    }
}

/// A running testbed. Dropping it kills every process it started (see [`crate::process`]).
pub struct Testbed {
    dir: PathBuf,
    temp: Option<tempfile::TempDir>,
    binaries: Binaries,
    etcd: Mutex<Option<Etcd>>,
    etcd_url: Option<String>,
    clusters: Vec<Cluster>,
    bao: Mutex<Option<Bao>>,
    extra: Mutex<Vec<Process>>,
    istiods: Mutex<Vec<Istiod>>,
    nodes: Vec<Node>,
    istiod_pods: Mutex<Vec<node::istiod::IstiodPod>>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("dir", &self.dir)
            .field("clusters", &self.clusters)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here only swaps or pushes values: a panic cannot leave a
    // half-updated value behind, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Testbed {
    /// Starts etcd (if there is any cluster), every cluster in parallel and, if asked, OpenBao;
    /// returns when every apiserver answers `/readyz` with `ok`.
    pub async fn start(opts: TestbedOptions) -> Result<Self> {
        let started = Instant::now();
        let binaries = opts
            .bin_dir
            .clone()
            .map(Binaries::in_dir)
            .unwrap_or_else(Binaries::locate);
        // Fail before touching anything if a binary is missing.
        let apiserver = if opts.clusters.is_empty() {
            None
        } else {
            Some((binaries.kube_apiserver()?, binaries.etcd()?))
        };
        if opts.bao {
            binaries.bao()?;
        }
        for n in &opts.nodes {
            if !opts.clusters.contains(n) {
                return Err(Error::NoSuchCluster(n.clone()));
            }
        }
        let node_bins = if opts.nodes.is_empty() {
            None
        } else {
            Some(NodeBinaries::locate(&binaries)?)
        };
        // The images, before anything runs (a missing binary is an error now, not later).
        let archives = if opts.nodes.is_empty() {
            Vec::new()
        } else {
            match &opts.node.images {
                NodeImages::Project => {
                    let bin = crate::image::own_bin_dir()?;
                    crate::image::project_images(&bin, &bin.join("images"))?
                }
                NodeImages::ProjectFrom(bin) => {
                    crate::image::project_images(bin, &bin.join("images"))?
                }
                NodeImages::Archives(paths) => paths
                    .iter()
                    .map(|p| crate::image::Archive::read(p))
                    .collect::<Result<_>>()?,
                NodeImages::None => Vec::new(),
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for name in &opts.clusters {
            let valid = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid || !seen.insert(name) {
                return Err(Error::Dir(format!(
                    "invalid or duplicate cluster name {name:?} (use lowercase letters, digits and '-')"
                )));
            }
        }

        let (dir, temp) = match &opts.dir {
            Some(d) => {
                prepare_dir(d).await?;
                (
                    std::fs::canonicalize(d).map_err(Error::io("resolve", d))?,
                    None,
                )
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("testbed-")
                    .tempdir()
                    .map_err(Error::io("create", std::env::temp_dir()))?;
                (t.path().to_owned(), Some(t))
            }
        };

        let mut tb = Testbed {
            dir: dir.clone(),
            temp,
            binaries,
            etcd: Mutex::new(None),
            etcd_url: None,
            clusters: Vec::new(),
            bao: Mutex::new(None),
            extra: Mutex::new(Vec::new()),
            istiods: Mutex::new(Vec::new()),
            nodes: Vec::new(),
            istiod_pods: Mutex::new(Vec::new()),
            state: Arc::new(Mutex::new(State::owned_by_me())),
        };
        // Mark the directory as ours before the first process starts.
        tb.save_state()?;

        let mut prepared = std::collections::BTreeMap::new();
        if let Some((apiserver, etcd_bin)) = apiserver {
            let etcd = etcd::start(&etcd_bin, &dir.join("etcd")).await?;
            let url = etcd.url.clone();
            tb.record(|s| {
                s.etcd_url = Some(url.clone());
                s.processes
                    .push(state::record("etcd", etcd.process.pid(), &etcd_bin));
            })?;
            *lock(&tb.etcd) = Some(etcd);
            tb.etcd_url = Some(url.clone());

            // Nodes first claim their network and cgroups (recorded before they exist, so a
            // crash in between still gets them removed).
            for name in &opts.nodes {
                let p = node::prepare(&dir, name)?;
                let info = p.info().clone();
                tb.record(|s| s.nodes.push(info))?;
                prepared.insert(name.clone(), p);
            }
            // Every apiserver's certificate names every node's bridge address: Pods on any
            // node reach every cluster through their own bridge (see `Cluster::server_from`).
            let gateways: Vec<std::net::Ipv4Addr> = prepared
                .values()
                .map(|p: &node::Prepared| p.network().gateway())
                .collect();
            let dirs: Vec<PathBuf> = opts.clusters.iter().map(|n| dir.join(n)).collect();
            // Collected first: a stream over a lazy `map` would make this future not `Send`
            // for callers that spawn it (higher-ranked closure lifetimes).
            let starts: Vec<_> = opts
                .clusters
                .iter()
                .zip(&dirs)
                .map(|(name, d)| {
                    let net = prepared.get(name).map(|p| p.network().clone());
                    let (apiserver, url, gateways) = (&apiserver, &url, &gateways);
                    let extra = &opts.apiserver_args;
                    async move {
                        Cluster::start(name, d, apiserver, url, net.as_ref(), gateways, extra).await
                    }
                })
                .collect();
            let parallel = opts
                .max_parallel_starts
                .unwrap_or(opts.clusters.len())
                .max(1);
            tb.clusters = {
                use futures::{StreamExt, TryStreamExt};
                futures::stream::iter(starts)
                    .buffered(parallel)
                    .try_collect()
                    .await?
            };
            let clusters = tb.clusters.clone();
            tb.record(|s| {
                for c in &clusters {
                    let servers_from = clusters
                        .iter()
                        .filter_map(|n| Some((n.name().to_owned(), c.server_from(n).ok()?)))
                        .collect();
                    s.clusters.push(ClusterInfo {
                        name: c.name().to_owned(),
                        server: c.server().to_owned(),
                        kubeconfig: c.kubeconfig_path().to_owned(),
                        servers_from,
                    });
                    if let Some(pid) = c.pid() {
                        s.processes.push(state::record(
                            &format!("{}/kube-apiserver", c.name()),
                            pid,
                            &apiserver,
                        ));
                    }
                }
            })?;
        }
        if let Some(bins) = &node_bins {
            let state = tb.state.clone();
            let dir = tb.dir.clone();
            let on_spawn = move |cluster: &str, role: &str, pid: u32, exe: &Path| {
                let mut s = lock(&state);
                s.processes
                    .push(state::record(&format!("{cluster}/{role}"), pid, exe));
                if let Err(e) = s.write(&dir, STATE_FILE) {
                    tracing::warn!(error = %e, "record a node process in the state file");
                }
            };
            let all = tb.clusters.clone();
            let starts = opts.nodes.iter().map(|name| {
                let cluster = tb.cluster(name).cloned();
                let all = &all;
                let prepared = prepared.remove(name);
                let on_spawn = &on_spawn;
                let archives = &archives;
                let node_opts = &opts.node;
                async move {
                    let cluster = cluster?;
                    let prepared = prepared.ok_or_else(|| Error::NoSuchCluster(name.clone()))?;
                    let hook = |role: &str, pid: u32, exe: &Path| on_spawn(name, role, pid, exe);
                    let others: Vec<Cluster> = all
                        .iter()
                        .filter(|c| c.name() != cluster.name())
                        .cloned()
                        .collect();
                    Node::start(
                        &cluster, &others, prepared, bins, node_opts, archives, &hook,
                    )
                    .await
                }
            });
            let results = futures::future::join_all(starts).await;
            let mut first_error = None;
            for r in results {
                match r {
                    Ok(n) => tb.nodes.push(n),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        if opts.bao {
            tb.start_bao().await?;
        }
        tb.record(|s| s.ready = true)?;
        tracing::info!(
            dir = %tb.dir.display(),
            clusters = tb.clusters.len(),
            ms = started.elapsed().as_millis() as u64,
            "testbed ready"
        );
        Ok(tb)
    }

    /// The testbed's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The binaries it runs.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// Every cluster, in the order given.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Result<&Cluster> {
        self.clusters
            .iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| Error::NoSuchCluster(name.to_owned()))
    }

    /// The nodes, in the order of [`TestbedOptions::nodes`].
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node of cluster `cluster`.
    pub fn node(&self, cluster: &str) -> Result<&Node> {
        self.cluster(cluster)?;
        self.nodes
            .iter()
            .find(|n| n.cluster().name() == cluster)
            .ok_or_else(|| {
                Error::Api(format!(
                    "cluster {cluster} has no node: start the testbed with it in TestbedOptions::nodes (testbed up --nodes)"
                ))
            })
    }

    /// etcd's client URL, if any cluster runs.
    pub fn etcd_url(&self) -> Option<&str> {
        self.etcd_url.as_deref()
    }

    /// etcd's pid.
    pub fn etcd_pid(&self) -> Option<u32> {
        lock(&self.etcd).as_ref().map(|e| e.process.pid())
    }

    /// Starts OpenBao (once; later calls return the running one) and records it in the state.
    pub async fn start_bao(&self) -> Result<Bao> {
        if let Some(b) = lock(&self.bao).clone() {
            return Ok(b);
        }
        let bin = self.binaries.bao()?;
        let bao = Bao::start(&bin, &self.dir.join("bao")).await?;
        let mut lost_race = None;
        {
            let mut slot = lock(&self.bao);
            match slot.as_ref() {
                // Another caller started one meanwhile: keep theirs.
                Some(existing) => lost_race = Some(existing.clone()),
                None => *slot = Some(bao.clone()),
            }
        }
        if let Some(existing) = lost_race {
            bao.kill();
            return Ok(existing);
        }
        let pid = bao.pid();
        let info = BaoInfo {
            addr: bao.addr().to_owned(),
            token_file: bao.dir().join("token"),
        };
        self.record(|s| {
            s.bao = Some(info.clone());
            if let Some(pid) = pid {
                s.processes.push(state::record("bao", pid, &bin));
            }
        })?;
        Ok(bao)
    }

    /// OpenBao, if started.
    pub fn bao(&self) -> Result<Bao> {
        lock(&self.bao).clone().ok_or(Error::NoBao)
    }

    /// Hands a process (e.g. istiod) to the testbed: it is recorded in the state file (so
    /// `testbed down` finds it) and killed with the testbed. Returns its pid.
    pub fn adopt(&self, process: Process) -> Result<u32> {
        let pid = process.pid();
        let info = state::record(process.name(), pid, &process.spec().program);
        self.record(|s| s.processes.push(info.clone()))?;
        lock(&self.extra).push(process);
        Ok(pid)
    }

    /// Starts kube-controller-manager for cluster `cluster` with only its ServiceAccount token
    /// controller (`--controllers=serviceaccount-token`): it fills Secrets of type
    /// `kubernetes.io/service-account-token` with a token, `ca.crt` and the namespace, as in a
    /// real cluster (a cluster without a node has no controller-manager otherwise; with one,
    /// it runs all controllers already). Stopped with the testbed. Needs `tools/build.sh nodes`.
    /// Returns its pid.
    pub fn start_token_controller(&self, cluster: &str) -> Result<u32> {
        let c = self.cluster(cluster)?;
        let binary = self.binaries.kube_controller_manager()?;
        let dir = c.dir().join("token-controller");
        std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let spec = crate::ProcessSpec::new(
            format!("{cluster}/kube-controller-manager"),
            binary,
            dir.join("kube-controller-manager.log"),
        )
        .args([
            format!("--kubeconfig={}", c.kubeconfig_path().display()),
            format!(
                "--authentication-kubeconfig={}",
                c.kubeconfig_path().display()
            ),
            format!(
                "--authorization-kubeconfig={}",
                c.kubeconfig_path().display()
            ),
            "--controllers=serviceaccount-token".to_owned(),
            format!(
                "--service-account-private-key-file={}",
                c.dir().join("sa.key").display()
            ),
            format!("--root-ca-file={}", c.dir().join("ca.crt").display()),
            "--leader-elect=false".to_owned(),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={}", crate::process::pick_port()?),
            format!("--cert-dir={}", dir.display()),
        ]);
        self.adopt(Process::spawn(spec)?)
    }

    /// Starts istiod for cluster `cluster` (see [`crate::istiod`]): it is recorded in the state
    /// file under `<cluster>/istiod` (the pid is updated on every restart), and stopped with the
    /// testbed. Needs `tools/build.sh istiod` (or `tools/build.sh istiod <opts.version>`).
    pub async fn start_istiod(&self, cluster: &str, opts: IstiodOptions) -> Result<Istiod> {
        let c = self.cluster(cluster)?.clone();
        if c.node_network().is_some() {
            return Err(Error::Api(format!(
                "cluster {cluster} has a node: run istiod as a Pod there (Testbed::start_istiod_pod); \
                 the process mode's recording-only Deployment would get real Pods from the controller-manager"
            )));
        }
        if lock(&self.istiods)
            .iter()
            .any(|i| i.cluster_name() == cluster && i.is_running())
        {
            return Err(Error::Api(format!(
                "istiod already runs in cluster {cluster}: use its handle (Testbed::istiods)"
            )));
        }
        let bin = self.binaries.pilot_discovery(&opts.version)?;
        let state = self.state.clone();
        let dir = self.dir.clone();
        let name = format!("{cluster}/istiod");
        let hook = move |p: &Process| {
            let info = state::record(&name, p.pid(), &p.spec().program);
            let mut s = lock(&state);
            s.processes.retain(|r| r.name != name);
            s.processes.push(info);
            if let Err(e) = s.write(&dir, STATE_FILE) {
                tracing::warn!(error = %e, "record istiod in the state file");
            }
        };
        let istiod = Istiod::start_with_hook(&c, &bin, opts, Some(Box::new(hook))).await?;
        lock(&self.istiods).push(istiod.clone());
        Ok(istiod)
    }

    /// Runs istiod as a Deployment in the node of cluster `cluster` (see
    /// [`crate::node::istiod`]) and returns once its Pod is ready. Needs
    /// `tools/build.sh istiod`; the image is made from that binary and imported on first use.
    pub async fn start_istiod_pod(
        &self,
        cluster: &str,
        opts: IstiodOptions,
    ) -> Result<node::istiod::IstiodPod> {
        let n = self.node(cluster)?.clone();
        let archive = crate::image::istiod_image(&self.binaries, &opts.version)?;
        let pod = node::istiod::IstiodPod::start(&n, &archive, opts).await?;
        lock(&self.istiod_pods).push(pod.clone());
        Ok(pod)
    }

    /// The istiods started with [`Testbed::start_istiod`].
    pub fn istiods(&self) -> Vec<Istiod> {
        lock(&self.istiods).clone()
    }

    /// A snapshot of the state file's content.
    pub fn state(&self) -> State {
        lock(&self.state).clone()
    }

    /// Keeps the directory after the testbed ends (for a temporary one) and returns it.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(t) = self.temp.take() {
            let _ = t.keep();
        }
        self.dir.clone()
    }

    /// Stops everything: extra processes, OpenBao, apiservers (gracefully, in parallel), then
    /// etcd, and removes the state file.
    pub async fn down(self) {
        let istiods: Vec<Istiod> = std::mem::take(&mut *lock(&self.istiods));
        futures::future::join_all(istiods.iter().map(|i| i.stop())).await;
        lock(&self.istiod_pods).clear();
        futures::future::join_all(self.nodes.iter().map(|n| n.stop())).await;
        let extra: Vec<Process> = std::mem::take(&mut *lock(&self.extra));
        for mut p in extra {
            p.terminate(Duration::from_secs(5)).await;
        }
        let bao = lock(&self.bao).take();
        if let Some(b) = bao {
            b.stop().await;
        }
        futures::future::join_all(self.clusters.iter().map(|c| c.stop())).await;
        let etcd = lock(&self.etcd).take();
        if let Some(mut e) = etcd {
            e.process.terminate(Duration::from_secs(5)).await;
        }
        // Drop does the rest (state file, temporary directory).
    }

    fn record(&self, f: impl FnOnce(&mut State)) -> Result<()> {
        let mut s = lock(&self.state);
        f(&mut s);
        s.write(&self.dir, STATE_FILE)
    }

    fn save_state(&self) -> Result<()> {
        lock(&self.state).write(&self.dir, STATE_FILE)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Handles may have been cloned by tests: kill through them.
        for i in lock(&self.istiods).iter() {
            i.kill();
        }
        for p in lock(&self.extra).iter_mut() {
            p.kill();
        }
        if let Some(b) = lock(&self.bao).take() {
            b.kill();
        }
        lock(&self.istiod_pods).clear();
        for n in &self.nodes {
            n.kill();
        }
        // Nodes that were prepared but did not start (their record is in the state).
        for info in &lock(&self.state).nodes {
            let problems = node::cleanup_leftovers(info);
            if !problems.is_empty() {
                tracing::warn!(node = %info.cluster, ?problems, "node clean-up left something behind");
            }
        }
        // Handles may have been cloned by tests: kill through them so clones don't keep
        // apiservers alive.
        for c in &self.clusters {
            c.kill();
        }
        if let Some(mut e) = lock(&self.etcd).take() {
            e.process.kill();
        }
        // Remove the state file only if it is still ours.
        if let Ok(Some(s)) = State::read(&self.dir, STATE_FILE)
            && s.owner_pid == std::process::id()
        {
            let _ = std::fs::remove_file(self.dir.join(STATE_FILE));
        }
        if self.temp.is_some() && std::env::var_os("TESTBED_KEEP_DIR").is_some() {
            self.keep_dir();
            eprintln!("testbed: kept {}", self.dir.display());
        }
    }
}

/// Makes `dir` usable: creates it, or accepts an empty one, or cleans up after a testbed whose
/// owner died. Refuses a directory in use or with foreign content.
async fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let shown = dir.display();
    match State::read(dir, STATE_FILE)? {
        Some(s) if s.owner_alive() && s.owner_pid != std::process::id() => {
            Err(Error::Dir(format!(
                "{shown} is in use by a running testbed (owner pid {}): use it as it is (`testbed status --dir {shown}`), \
             or stop it first with `testbed down --dir {shown}`",
                s.owner_pid
            )))
        }
        Some(s) => {
            let killed = s.kill_all(Duration::from_secs(5)).await;
            if !killed.is_empty() {
                tracing::warn!(?killed, "killed leftovers of a previous testbed in {shown}");
            }
            // (kill_all also removed what the nodes left: Pods, shims, cgroups, bridges.)
            // Start from scratch: old etcd data would bring back old objects.
            let mut stale: Vec<PathBuf> = vec![dir.join("etcd"), dir.join("bao")];
            stale.extend(s.clusters.iter().map(|c| dir.join(&c.name)));
            for p in stale {
                if p.exists() {
                    std::fs::remove_dir_all(&p).map_err(Error::io("remove", &p))?;
                }
            }
            Ok(())
        }
        None => {
            let foreign = std::fs::read_dir(dir)
                .map_err(Error::io("read", dir))?
                .filter_map(|e| e.ok())
                // `testbed up --detach` writes its log before the testbed starts.
                .any(|e| e.file_name() != "testbed.log");
            if foreign {
                Err(Error::Dir(format!(
                    "{shown} is not empty and holds no testbed state: choose a new or empty directory"
                )))
            } else {
                Ok(())
            }
        }
    }
}
