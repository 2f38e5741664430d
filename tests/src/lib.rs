//! A harness for end-to-end tests: a testbed with a hub cluster and members, the `federator`
//! and `cluster-agent` binaries run as real processes, and helpers to wait for and check trust.
//!
//! For the proof with real istiod: [`Federation::start_istiod`], and workloads that get their
//! certificates from istiod's CA and shake hands over mutual TLS ([`workload`],
//! [`assert_mtls`], [`assert_no_mtls`], built on the `mtls` crate).
//!
//! The binaries are the workspace's own (`target/<profile>/federator`, `.../cluster-agent`);
//! `cargo test --workspace` and `cargo nextest run --workspace` build them before any test runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod crash;
pub mod examples;
pub mod hygiene;
pub mod rotation;
pub mod snapshot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use federator_api::hub::MemberCluster;
use federator_api::member::ClusterTrust;
use federator_api::names;
use federator_core::cacerts::{self, CaCerts};
use federator_core::cert;
use federator_core::identity::SpiffeId;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ObjectMeta, PostParams};
use mtls::{Workload, WorkloadCert};
use testbed::istiod;
use testbed::{
    Cluster, Istiod, IstiodOptions, IstiodPod, Process, ProcessSpec, Testbed, TestbedOptions,
};
use time::OffsetDateTime;

/// Path of a workspace binary next to the running test's directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the workspace first (cargo build --workspace, or run the tests with cargo test --workspace)",
        path.display()
    );
    path
}

pub use federator_testkit::wait_for;

/// The `--log-level` of the hub and the agents the harness starts: federator's own code at
/// debug, so that the secret-hygiene scan ([`hygiene`]) reads what debug output would show.
pub const LOG_LEVEL: &str =
    "info,federator=debug,federator_api=debug,federator_core=debug,cluster_agent=debug,mtls=debug";

/// A member of the test federation.
pub struct Member {
    /// Its testbed cluster.
    pub cluster: Cluster,
    /// Its trust domain.
    pub trust_domain: String,
    /// The agent's kubeconfig (for its own least-privilege identity).
    pub agent_kubeconfig: PathBuf,
    /// The running agent, if started.
    pub agent: Option<Process>,
}

/// A federation on a testbed: a hub cluster and members.
pub struct Federation {
    /// The testbed (dropped last: it owns the control planes).
    pub testbed: Testbed,
    /// The hub cluster.
    pub hub: Cluster,
    /// Members by name.
    pub members: BTreeMap<String, Member>,
    /// The running `federator serve`, if started.
    pub serve: Option<Process>,
    /// Its `--metrics-addr` (`host:port`), once started.
    pub metrics_addr: Option<String>,
    /// Scratch directory for logs and files.
    pub dir: PathBuf,
}

/// After a test that passed, the secret-hygiene scan ([`hygiene::scan`]) of its logs and of
/// every object of its running clusters: a private key anywhere it does not belong fails the
/// test.
impl Drop for Federation {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let clusters: Vec<Cluster> = self
            .testbed
            .clusters()
            .iter()
            .filter(|c| c.is_running())
            .cloned()
            .collect();
        let dir = self.dir.clone();
        // The test's runtime is still on this thread (a Federation drops inside it): scan on
        // a thread of its own.
        let report = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut clients = Vec::new();
                for c in &clusters {
                    clients.push((c.name().to_owned(), c.client().await.unwrap()));
                }
                tokio::time::timeout(Duration::from_secs(120), hygiene::scan(&dir, &clients))
                    .await
                    .expect("the secret-hygiene scan finishes in 120 s")
            })
        })
        .join()
        .unwrap();
        eprintln!("{report}");
        assert!(
            report.problems.is_empty(),
            "secret hygiene: private key material where it does not belong:\n{}",
            report.problems.join("\n")
        );
    }
}

impl Federation {
    /// The running agent of member `name` (to pause, resume or kill it). Panics when the
    /// member has no agent running: the test did not start it.
    pub fn agent_process(&mut self, name: &str) -> &mut Process {
        self.members
            .get_mut(name)
            .and_then(|m| m.agent.as_mut())
            .unwrap_or_else(|| panic!("member {name} has no running agent"))
    }

    /// Starts a testbed with a cluster `hub` plus the named members, and runs `federator init`
    /// with `init_args`.
    pub async fn start(members: &[(&str, &str)], init_args: &[&str]) -> Federation {
        Self::start_on("hub", members, init_args, None).await
    }

    /// Like [`Federation::start`], with the hub in cluster `hub` — which may be one of the
    /// members — and the testbed in `dir` (a temporary directory when `None`).
    pub async fn start_on(
        hub: &str,
        members: &[(&str, &str)],
        init_args: &[&str],
        dir: Option<PathBuf>,
    ) -> Federation {
        let fed = Self::without_init(hub, members, dir).await;
        let mut args = vec!["init"];
        args.extend_from_slice(init_args);
        fed.federator_ok(&args);
        fed
    }

    /// The testbed and the member records, without `federator init` (for tests that need
    /// something else first, such as OpenBao).
    pub async fn without_init(
        hub: &str,
        members: &[(&str, &str)],
        dir: Option<PathBuf>,
    ) -> Federation {
        Self::without_init_plus(hub, members, &[], dir).await
    }

    /// Like [`Federation::start_on`] (hub in cluster `hub`, temporary directory), with extra
    /// testbed clusters `outsiders` that are not members (reach them with
    /// `fed.testbed.cluster(name)`), e.g. a mesh outside the federation.
    pub async fn start_with_outsiders(
        hub: &str,
        members: &[(&str, &str)],
        outsiders: &[&str],
        init_args: &[&str],
    ) -> Federation {
        let fed = Self::without_init_plus(hub, members, outsiders, None).await;
        let mut args = vec!["init"];
        args.extend_from_slice(init_args);
        fed.federator_ok(&args);
        fed
    }

    /// A federation whose members have real nodes (see `testbed::node`): the hub in cluster
    /// `hub` (one of the members), every member with a node that imported the project's images
    /// (built from this workspace's `cluster-agent` and `federator`), the kubelets syncing every
    /// `kubelet_sync` (`None`: the kubelet's default, 1 min), then `federator init`.
    pub async fn start_with_nodes(
        hub: &str,
        members: &[(&str, &str)],
        init_args: &[&str],
        kubelet_sync: Option<Duration>,
    ) -> Federation {
        let fed = Self::with_nodes(hub, members, kubelet_sync).await;
        let mut args = vec!["init"];
        args.extend_from_slice(init_args);
        fed.federator_ok(&args);
        fed
    }

    /// Like [`Federation::start_with_nodes`] without `federator init`, and with the hub in
    /// its own node cluster when `hub` is not a member (for a hub installed as Pods).
    pub async fn with_nodes(
        hub: &str,
        members: &[(&str, &str)],
        kubelet_sync: Option<Duration>,
    ) -> Federation {
        let mut names: Vec<String> = members.iter().map(|(n, _)| (*n).to_owned()).collect();
        if !names.iter().any(|n| n == hub) {
            names.insert(0, hub.to_owned());
        }
        let mut opts = TestbedOptions::named(names).with_nodes();
        if let Some(every) = kubelet_sync {
            opts = opts.kubelet_sync_frequency(every);
        }
        Self::from_options(hub, members, opts).await
    }

    async fn without_init_plus(
        hub: &str,
        members: &[(&str, &str)],
        outsiders: &[&str],
        dir: Option<PathBuf>,
    ) -> Federation {
        let mut names: Vec<String> = members.iter().map(|(n, _)| (*n).to_owned()).collect();
        if !names.iter().any(|n| n == hub) {
            names.insert(0, hub.to_owned());
        }
        names.extend(outsiders.iter().map(|n| (*n).to_owned()));
        let mut opts = TestbedOptions::named(names);
        if let Some(d) = dir {
            opts = opts.dir(d);
        }
        Self::from_options(hub, members, opts).await
    }

    /// The testbed of `opts` (which must name `hub` and every member) and the member
    /// records, without `federator init` (e.g. the fleet benchmark's trimmed apiservers).
    pub async fn with_options(
        hub: &str,
        members: &[(&str, &str)],
        opts: TestbedOptions,
    ) -> Federation {
        Self::from_options(hub, members, opts).await
    }

    async fn from_options(hub: &str, members: &[(&str, &str)], opts: TestbedOptions) -> Federation {
        let testbed = Testbed::start(opts).await.unwrap();
        let dir = testbed.dir().to_path_buf();
        let hub = testbed.cluster(hub).unwrap().clone();
        let mut fed = Federation {
            hub,
            members: BTreeMap::new(),
            serve: None,
            metrics_addr: None,
            dir,
            testbed,
        };
        for (name, td) in members {
            let cluster = fed.testbed.cluster(name).unwrap().clone();
            fed.members.insert(
                (*name).to_owned(),
                Member {
                    agent_kubeconfig: fed.dir.join(format!("{name}-agent.kubeconfig")),
                    cluster,
                    trust_domain: (*td).to_owned(),
                    agent: None,
                },
            );
        }
        fed
    }

    /// Runs the `federator` binary against the hub; returns its output.
    pub fn federator(&self, args: &[&str]) -> Output {
        std::process::Command::new(bin("federator"))
            .args(args)
            .env("FEDERATOR_HUB_KUBECONFIG", self.hub.kubeconfig_path())
            .output()
            .unwrap()
    }

    /// Runs `federator`, asserting success; returns stdout.
    pub fn federator_ok(&self, args: &[&str]) -> String {
        let out = self.federator(args);
        assert!(
            out.status.success(),
            "federator {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Joins a member the way the README says: no agent flags, so the agent runs as a
    /// Deployment of the default image (on a node cluster, where the testbed imported it).
    pub fn join_default(&self, name: &str) -> String {
        self.join_default_with(name, &[])
    }

    /// Like [`Federation::join_default`], with `extra` flags (e.g. `--server URL`).
    pub fn join_default_with(&self, name: &str, extra: &[&str]) -> String {
        let m = &self.members[name];
        let mut args = vec![
            "join",
            "cluster",
            name,
            "--kubeconfig",
            m.cluster.kubeconfig_path().to_str().unwrap(),
            "--trust-domain",
            &m.trust_domain,
        ];
        args.extend_from_slice(extra);
        self.federator_ok(&args)
    }

    /// Joins a member with an external agent.
    pub fn join(&self, name: &str) -> String {
        let args = self.join_args(name);
        self.federator_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The arguments of [`Federation::join`].
    pub fn join_args(&self, name: &str) -> Vec<String> {
        let m = &self.members[name];
        [
            "join",
            "cluster",
            name,
            "--kubeconfig",
            m.cluster.kubeconfig_path().to_str().unwrap(),
            "--trust-domain",
            &m.trust_domain,
            "--agent-mode",
            "external",
            "--agent-kubeconfig-out",
            m.agent_kubeconfig.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Creates the `istio` ConfigMap a mesh installation would have, with the member's trust
    /// domain in its mesh config.
    pub async fn install_mesh_config(&self, name: &str) {
        let m = &self.members[name];
        let api: Api<ConfigMap> =
            Api::namespaced(m.cluster.client().await.unwrap(), names::ISTIO_NAMESPACE);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(names::ISTIO_CONFIGMAP.into()),
                ..ObjectMeta::default()
            },
            data: Some(
                [(
                    names::MESH_KEY.to_owned(),
                    format!("trustDomain: {}\n", m.trust_domain),
                )]
                .into(),
            ),
            ..ConfigMap::default()
        };
        api.create(&PostParams::default(), &cm).await.unwrap();
    }

    /// Starts one `federator serve --leader-elect --identity ID` replica against the hub (log
    /// level info, its log `serve-<id>.log` in the federation's directory), with `extra`
    /// arguments; several of them form an HA hub. Kept apart from [`Federation::serve`].
    pub fn serve_replica(&self, id: &str, extra: &[&str]) -> Process {
        let spec = ProcessSpec::new(
            format!("serve-{id}"),
            bin("federator"),
            self.dir.join(format!("serve-{id}.log")),
        )
        .args([
            "serve",
            "--leader-elect",
            "--identity",
            id,
            "--log-level",
            "info",
        ])
        .args(extra.iter().copied())
        .env("FEDERATOR_HUB_KUBECONFIG", self.hub.kubeconfig_path());
        Process::spawn(spec).unwrap()
    }

    /// Starts `federator serve` (killed when the Federation drops), serving its metrics on
    /// `--metrics-addr` (a free port unless `extra` names one; see [`Federation::hub_metrics`]).
    pub fn start_serve(&mut self, extra: &[&str]) {
        let kubeconfig = self.hub.kubeconfig_path().to_owned();
        self.start_serve_with(extra, LOG_LEVEL, &kubeconfig);
    }

    /// Like [`Federation::start_serve`], at `log_level` and with `hub_kubeconfig` as the
    /// hub's credential (e.g. one in [`testbed::AUDITED_GROUP`], to count its requests).
    pub fn start_serve_with(&mut self, extra: &[&str], log_level: &str, hub_kubeconfig: &Path) {
        let spec = self.serve_spec(extra, log_level, hub_kubeconfig);
        self.serve = Some(Process::spawn(spec).unwrap());
    }

    /// What [`Federation::start_serve_with`] starts (and records its metrics address).
    fn serve_spec(
        &mut self,
        extra: &[&str],
        log_level: &str,
        hub_kubeconfig: &Path,
    ) -> ProcessSpec {
        let mut spec = ProcessSpec::new(
            "federator-serve",
            bin("federator"),
            self.dir.join("serve.log"),
        )
        .args(["serve", "--log-level", log_level])
        .env("FEDERATOR_HUB_KUBECONFIG", hub_kubeconfig);
        for a in extra {
            spec = spec.arg(*a);
        }
        let addr = match extra.iter().position(|a| *a == "--metrics-addr") {
            Some(i) => extra[i + 1].to_owned(),
            None => {
                let addr = format!("127.0.0.1:{}", testbed::process::pick_port().unwrap());
                spec = spec.args(["--metrics-addr", &addr]);
                addr
            }
        };
        self.metrics_addr = Some(addr);
        spec
    }

    /// The hub's `/metrics`, once `serve` runs and answers.
    pub async fn hub_metrics(&self) -> Option<String> {
        let r = testbed::http::get(self.metrics_addr.as_deref()?, "/metrics", None)
            .await
            .ok()?;
        r.is_success().then_some(r.body)
    }

    /// Starts a member's agent (killed when the Federation drops).
    pub fn start_agent(&mut self, name: &str) {
        self.start_agent_with(name, LOG_LEVEL);
    }

    /// Like [`Federation::start_agent`], at `log_level`.
    pub fn start_agent_with(&mut self, name: &str, log_level: &str) {
        let spec = self.agent_spec(name, log_level);
        self.members.get_mut(name).unwrap().agent = Some(Process::spawn(spec).unwrap());
    }

    /// What [`Federation::start_agent_with`] starts.
    fn agent_spec(&self, name: &str, log_level: &str) -> ProcessSpec {
        let log = self.dir.join(format!("{name}-agent.log"));
        let m = &self.members[name];
        ProcessSpec::new(format!("{name}-agent"), bin("cluster-agent"), log).args(
            federator_testkit::agent_args(&m.agent_kubeconfig, name, log_level),
        )
    }

    /// A member's `cacerts` as files, if it exists.
    pub async fn cacerts(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        cacerts_of(&self.members[name].cluster).await
    }

    /// A [`TrustWatch::start_cacerts`] over `members` (name and trust domain) of this
    /// federation, every `every`.
    pub fn watch_cacerts(&self, members: &[(&str, &str)], every: Duration) -> TrustWatch {
        TrustWatch::start_cacerts(
            members
                .iter()
                .map(|(m, td)| (self.members[*m].cluster.clone(), (*td).to_owned()))
                .collect(),
            every,
        )
    }

    /// Waits until every one of `members` runs on a cluster CA under the root with SHA-256
    /// fingerprint `root` and its `root-cert.pem` holds that root alone (the federation has one
    /// root: a single issuer, or one trust domain).
    pub async fn wait_all_on_root(&self, members: &[&str], root: &str) {
        for m in members {
            wait_for(
                &format!("{m} to run on root {root} alone"),
                Duration::from_secs(60),
                || async {
                    let s = self.member_cluster(m).await?.status?;
                    let f = self.cacerts(m).await?;
                    let roots = cert::parse_pem_certificates(&f["root-cert.pem"], "roots").ok()?;
                    (s.ca_root_sha256 == root
                        && roots.len() == 1
                        && cert::fingerprint(&roots[0]) == root)
                        .then_some(())
                },
            )
            .await;
        }
    }

    /// The holder of the hub's `federator-leader` Lease, if someone holds it.
    pub async fn lease_holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.hub.client().await.ok()?, names::NAMESPACE);
        leases
            .get_opt(names::LEADER_LEASE)
            .await
            .ok()??
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    }

    /// A member's `ClusterTrust`.
    pub async fn cluster_trust(&self, name: &str) -> Option<ClusterTrust> {
        let api: Api<ClusterTrust> = Api::namespaced(
            self.members[name].cluster.client().await.ok()?,
            names::NAMESPACE,
        );
        api.get_opt(names::CLUSTER_TRUST).await.ok()?
    }

    /// The cluster CA in a member's `cacerts` (DER).
    pub async fn cluster_ca(&self, name: &str) -> Vec<u8> {
        let files = self.cacerts(name).await.unwrap();
        first_cert(&files[cacerts::CA_CERT])
    }

    /// The root its cluster CA in `cacerts` is signed under: the last certificate of
    /// `cert-chain.pem` (SHA-256).
    pub async fn chain_root(&self, name: &str) -> String {
        let files = self.cacerts(name).await.unwrap();
        let chain =
            cert::parse_pem_certificates(&files[cacerts::CERT_CHAIN], "cert-chain.pem").unwrap();
        cert::fingerprint(chain.last().unwrap())
    }

    /// Waits until a member's `cacerts` holds a cluster CA other than `old`; returns it.
    pub async fn wait_new_cluster_ca(&self, name: &str, old: &[u8]) -> Vec<u8> {
        wait_for(
            &format!("{name}'s new cluster CA"),
            Duration::from_secs(60),
            || async {
                let ca = self.cluster_ca(name).await;
                (ca != old).then_some(ca)
            },
        )
        .await
    }

    /// Asks a member for a renewal the way the hub does at `renewAfter`: bumps
    /// `spec.csrGeneration` of its `ClusterTrust`.
    pub async fn bump_csr_generation(&self, name: &str) {
        let cts: Api<ClusterTrust> = Api::namespaced(
            self.members[name].cluster.client().await.unwrap(),
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
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&bump),
        )
        .await
        .unwrap();
    }

    /// The hub's `Federation` status.
    pub async fn federation_status(&self) -> federator_api::hub::FederationStatus {
        let api: Api<federator_api::hub::Federation> =
            Api::namespaced(self.hub.client().await.unwrap(), names::NAMESPACE);
        api.get(names::FEDERATION)
            .await
            .unwrap()
            .status
            .unwrap_or_default()
    }

    /// A member's `MemberCluster` on the hub.
    pub async fn member_cluster(&self, name: &str) -> Option<MemberCluster> {
        let api: Api<MemberCluster> =
            Api::namespaced(self.hub.client().await.ok()?, names::NAMESPACE);
        api.get_opt(name).await.ok()?
    }

    /// Joins every member (external agents; with `mesh_configs`, each gets the `istio`
    /// ConfigMap a mesh installation would have), starts `federator serve` and every agent,
    /// and waits (up to 90 s) until all of them are healthy.
    pub async fn join_all_and_serve(&mut self, mesh_configs: bool) {
        let names: Vec<String> = self.members.keys().cloned().collect();
        for name in &names {
            self.join(name);
            if mesh_configs {
                self.install_mesh_config(name).await;
            }
        }
        self.start_serve(&[]);
        for name in &names {
            self.start_agent(name);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.wait_healthy(&names, Duration::from_secs(90)).await;
    }

    /// Waits until every listed member has valid `cacerts` whose bundle is the current one and
    /// `federator status` reports them healthy.
    pub async fn wait_healthy(&self, members: &[&str], timeout: Duration) {
        for name in members {
            wait_for(
                &format!("{name} to have valid cacerts"),
                timeout,
                || async {
                    let files = self.cacerts(name).await?;
                    cacerts::inspect(&files, OffsetDateTime::now_utc())
                        .is_ok()
                        .then_some(())
                },
            )
            .await;
        }
        wait_for(
            "federator status to report every member healthy",
            timeout,
            || async {
                let out = self.federator(&["status", "-o", "json"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                let clusters = v["clusters"].as_array()?;
                let all = members.iter().all(|n| {
                    clusters
                        .iter()
                        .any(|c| c["name"] == *n && c["healthy"] == true)
                });
                all.then_some(())
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Root rotations (tests/tests/rotation.rs, vault.rs).

/// Checks that every pair of `members` trusts each other right now.
pub async fn check_trust(fed: &Federation, members: &[(&str, &str)]) {
    let mut files = BTreeMap::new();
    for (m, _) in members {
        files.insert(*m, fed.cacerts(m).await.unwrap());
    }
    for (from, td) in members {
        let leaf = mint_leaf(&files[from], &format!("spiffe://{td}/ns/a/sa/b"));
        for (to, _) in members {
            verifies(&leaf, &files[to])
                .unwrap_or_else(|e| panic!("trust gap during rotation: {from} at {to}: {e}"));
        }
    }
}

/// Whether `client`'s identity may `verb` the `resource` (`name.group`, or a core resource),
/// in `namespace` (cluster-wide if `None`), on the object `name` (any if `None`): a
/// SelfSubjectAccessReview answered by the real API server.
pub async fn allowed(
    client: &kube::Client,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let (resource, group) = resource
        .split_once('.')
        .map_or((resource, ""), |(r, g)| (r, g));
    let attributes = k8s_openapi::api::authorization::v1::ResourceAttributes {
        verb: Some(verb.into()),
        resource: Some(resource.into()),
        group: Some(group.into()),
        namespace: namespace.map(Into::into),
        name: name.map(Into::into),
        ..Default::default()
    };
    federator_api::plumbing::access_allowed(client, attributes)
        .await
        .unwrap()
}

/// The SHA-256 of the root of trust domain `td` in the federation's status.
pub fn root_of(st: &federator_api::hub::FederationStatus, td: &str) -> String {
    let root = st.roots.iter().find(|r| r.trust_domain == td).unwrap();
    root.sha256.clone()
}

/// Runs trust checks until the federation has no rotation left. Returns the phases seen and
/// whether `old_leaf` still verified at `witness` while draining.
pub async fn follow_rotation(
    fed: &Federation,
    members: &[(&str, &str)],
    old_leaf: Option<(&[Vec<u8>], &str)>,
) -> (std::collections::BTreeSet<String>, bool) {
    let mut phases = std::collections::BTreeSet::new();
    let mut metric_phases = std::collections::BTreeSet::new();
    let mut old_leaf_ok_while_draining = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        check_trust(fed, members).await;
        let st = fed.federation_status().await;
        // The hub's metrics follow the status: a phase series for each rotation, with the
        // time it entered that phase.
        if let Some(m) = fed.hub_metrics().await {
            for line in m.lines() {
                if let Some(labels) = line.strip_prefix("federator_rotation_phase{") {
                    let phase = labels
                        .split("phase=\"")
                        .nth(1)
                        .and_then(|p| p.split('"').next());
                    metric_phases.insert(phase.unwrap_or_default().to_owned());
                    assert!(line.ends_with("} 1"), "{line}");
                }
            }
        }
        for r in &st.rotations {
            assert!(r.phase_since.is_some(), "{r:?}");
            phases.insert(r.phase.to_string());
            if r.phase == federator_api::hub::RotationPhase::Draining
                && let Some((leaf, witness)) = old_leaf
            {
                old_leaf_ok_while_draining |=
                    verifies(leaf, &fed.cacerts(witness).await.unwrap()).is_ok();
            }
        }
        if st.rotations.is_empty() && !phases.is_empty() {
            assert!(metric_phases.contains("draining"), "{metric_phases:?}");
            assert!(
                metric_phases
                    .iter()
                    .all(|p| ["trusting-new-root", "re-signing", "draining"].contains(&p.as_str())),
                "{metric_phases:?}"
            );
            wait_for(
                "the rotation's series to leave the metrics",
                Duration::from_secs(30),
                || async {
                    let m = fed.hub_metrics().await?;
                    (!m.contains("federator_rotation_phase{")
                        && !m.contains("federator_rotation_phase_start_timestamp_seconds{"))
                    .then_some(())
                },
            )
            .await;
            return (phases, old_leaf_ok_while_draining);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation did not complete; phases seen: {phases:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A cluster's `istio-system/cacerts` as files, if it exists.
pub async fn cacerts_of(cluster: &Cluster) -> Option<BTreeMap<String, Vec<u8>>> {
    let api: Api<Secret> = Api::namespaced(cluster.client().await.ok()?, names::ISTIO_NAMESPACE);
    let s = api.get_opt(names::CACERTS_SECRET).await.ok()??;
    Some(s.data?.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Whether a Pod's `Ready` condition is true.
pub fn pod_is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Mints a workload leaf for `id` from a member's `cacerts` files (as istiod would).
pub fn mint_leaf(files: &BTreeMap<String, Vec<u8>>, id: &str) -> Vec<Vec<u8>> {
    let c = CaCerts::from_files(files).unwrap();
    c.issue_workload_cert(
        &SpiffeId::parse(id).unwrap(),
        Duration::from_secs(600),
        OffsetDateTime::now_utc(),
    )
    .unwrap()
    .chain
}

/// Whether a leaf chain verifies against a member's `root-cert.pem` (rustls-webpki).
pub fn verifies(chain: &[Vec<u8>], files: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let roots = cert::parse_pem_certificates(&files[cacerts::ROOT_CERT], "root-cert.pem")
        .map_err(|e| e.to_string())?;
    federator_core::verify::verify_workload_chain(chain, &roots, OffsetDateTime::now_utc())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `openssl verify -x509_strict` of a leaf chain (`chain[0]` the leaf) against the PEM
/// `roots`; the error holds openssl's output.
pub fn openssl_verify_chain(chain: &[Vec<u8>], roots: &[u8]) -> Result<(), String> {
    let (leaf, rest) = chain.split_first().expect("a chain holds its leaf");
    federator_testkit::openssl::verify_pem(
        &cert::to_pem([leaf.as_slice()]),
        std::str::from_utf8(roots).unwrap(),
        &cert::to_pem(rest.iter().map(Vec::as_slice)),
    )
}

/// Go's `crypto/x509` verdict on a leaf chain against the PEM `roots`, with
/// `tools/x509verify` (built by `tools/build.sh`); the error holds Go's message.
pub fn go_verify_chain(chain: &[Vec<u8>], roots: &[u8]) -> Result<(), String> {
    let tool = testbed::Binaries::locate().x509verify().unwrap();
    let (leaf, rest) = chain.split_first().expect("a chain holds its leaf");
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f);
    std::fs::write(path("roots.pem"), roots).unwrap();
    std::fs::write(
        path("chain.pem"),
        cert::to_pem(rest.iter().map(Vec::as_slice)),
    )
    .unwrap();
    std::fs::write(path("leaf.pem"), cert::to_pem([leaf.as_slice()])).unwrap();
    let out = std::process::Command::new(tool)
        .arg(path("roots.pem"))
        .arg(path("chain.pem"))
        .arg(path("leaf.pem"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(text),
        _ => panic!("x509verify could not run: {text}"),
    }
}

/// Writes files to a directory (for the openssl CLI).
pub fn write_dir(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, v) in files {
        std::fs::write(dir.join(k), v).unwrap();
    }
}

/// `openssl verify -x509_strict` of `cert` against `roots`, with optional untrusted chain.
pub fn openssl_verify(cert: &Path, roots: &Path, untrusted: Option<&Path>) -> bool {
    federator_testkit::openssl::verify(cert, roots, untrusted).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Real istiod and workloads (tests/tests/istiod.rs).

impl Federation {
    /// Starts real istiod in testbed cluster `name` (a member or an outsider) with
    /// `trust_domain` in its mesh config and `ISTIO_MULTIROOT_MESH=true`; stopped with the
    /// testbed.
    pub async fn start_istiod(&self, name: &str, trust_domain: &str) -> Istiod {
        self.start_istiod_version(name, trust_domain, testbed::ISTIO_VERSION)
            .await
    }

    /// Like [`Federation::start_istiod`], with istiod `version` (one of
    /// [`testbed::ISTIO_VERSIONS`]).
    pub async fn start_istiod_version(
        &self,
        name: &str,
        trust_domain: &str,
        version: &str,
    ) -> Istiod {
        self.testbed
            .start_istiod(name, IstiodOptions::new(trust_domain).version(version))
            .await
            .unwrap_or_else(|e| panic!("istiod {version} of {name}: {e}"))
    }
}

/// Creates namespace `ns` and ServiceAccount `ns/sa` in `cluster` if missing (the testbed has
/// no controller-manager to make ServiceAccounts).
pub async fn ensure_service_account(cluster: &Cluster, ns: &str, sa: &str) {
    let client = cluster.client().await.unwrap();
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create namespace {ns}: {e}"),
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(sa.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match Api::<ServiceAccount>::namespaced(client, ns)
        .create(&PostParams::default(), &account)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create ServiceAccount {ns}/{sa}: {e}"),
    }
}

/// Every Event about the object of `kind` named `name` in `federator-system` of the cluster
/// `client` talks to, as (reason, note).
pub async fn events_about(client: &kube::Client, kind: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), names::NAMESPACE);
    let events = api.list(&kube::api::ListParams::default()).await.unwrap();
    events
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .filter_map(|e| Some((e.reason?, e.note.unwrap_or_default())))
        .collect()
}

/// The `root-cert.pem` of the `istio-ca-root-cert` ConfigMap istiod published in namespace
/// `ns` of `cluster` (what a pod there mounts to trust istiod and its peers).
pub async fn published_roots(cluster: &Cluster, ns: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().await.ok()?, ns);
    let cm = api.get_opt(istiod::ROOT_CERT_CONFIGMAP).await.ok()??;
    cm.data?.get("root-cert.pem").cloned()
}

/// Waits for [`published_roots`].
pub async fn wait_published_roots(cluster: &Cluster, ns: &str) -> String {
    wait_for(
        &format!("istio-ca-root-cert in {}/{ns}", cluster.name()),
        Duration::from_secs(60),
        || published_roots(cluster, ns),
    )
    .await
}

/// The number of certificates in a PEM bundle.
pub fn pem_count(pem: &str) -> usize {
    cert::parse_pem_certificates(pem.as_bytes(), "bundle")
        .map(|c| c.len())
        .unwrap_or(0)
}

/// Asks `istiod` of `cluster` for a workload certificate for ServiceAccount `ns/sa`, as
/// istio-agent does: a TokenRequest token for audience `istio-ca`, TLS to istiod's CA port
/// trusting the published `istio-ca-root-cert`, a fresh P-256 key. Creates the namespace and
/// ServiceAccount if needed.
pub async fn request_workload_cert(
    cluster: &Cluster,
    istiod: &Istiod,
    ns: &str,
    sa: &str,
    ttl: Duration,
) -> mtls::Result<WorkloadCert> {
    request_workload_cert_at(cluster, istiod.secure_grpc_addr().unwrap(), ns, sa, ttl).await
}

/// [`request_workload_cert`] from the istiod whose CA port is `addr` (e.g. an istiod Pod's).
pub async fn request_workload_cert_at(
    cluster: &Cluster,
    addr: std::net::SocketAddr,
    ns: &str,
    sa: &str,
    ttl: Duration,
) -> mtls::Result<WorkloadCert> {
    ensure_service_account(cluster, ns, sa).await;
    let token = cluster
        .token_request(ns, sa, &[mtls::ISTIO_CA_AUDIENCE], Some(3600))
        .await
        .unwrap();
    let roots = wait_published_roots(cluster, ns).await;
    mtls::CaClient::new(addr, roots.as_bytes())?
        .with_cluster_id(cluster.name())
        .create_certificate(&token, ttl)
        .await
}

/// A workload of `cluster` in `ns` running as ServiceAccount `ns/sa`: a fresh certificate
/// from its istiod (1 h) and, as its trust, the bundle that istiod published in `ns`.
pub async fn workload(cluster: &Cluster, istiod: &Istiod, ns: &str, sa: &str) -> Workload {
    let cert = request_workload_cert(cluster, istiod, ns, sa, Duration::from_secs(3600))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "workload certificate from istiod of {}: {e}",
                cluster.name()
            )
        });
    let trust = wait_published_roots(cluster, ns).await;
    Workload::new(cert, trust.as_bytes()).unwrap()
}

/// The same workload certificate with the trust bundle istiod publishes *now* in `ns` (a
/// sidecar picks up new roots without a new certificate).
pub async fn with_current_trust(w: &Workload, cluster: &Cluster, ns: &str) -> Workload {
    let trust = wait_published_roots(cluster, ns).await;
    Workload::new(w.cert().clone(), trust.as_bytes()).unwrap()
}

/// Mutual TLS in both directions between `a` and `b`; panics unless each side sees the
/// other's SPIFFE ID.
pub async fn assert_mtls(a: &Workload, b: &Workload) {
    for (client, server) in [(a, b), (b, a)] {
        let out = mtls::handshake(client, server).await.unwrap_or_else(|e| {
            panic!("{} (client) -> {} (server): {e}", client.id(), server.id())
        });
        assert_eq!(out.client_saw, server.id());
        assert_eq!(out.server_saw, client.id());
    }
}

/// Mutual TLS in both directions between `a` and `b`; panics if either direction completes.
/// Returns the two errors.
pub async fn assert_no_mtls(a: &Workload, b: &Workload) -> [String; 2] {
    let mut errors = Vec::new();
    for (client, server) in [(a, b), (b, a)] {
        match mtls::handshake(client, server).await {
            Ok(out) => panic!(
                "{} (client) -> {} (server) completed a handshake: {out:?}",
                client.id(),
                server.id()
            ),
            Err(e) => errors.push(e.to_string()),
        }
    }
    [errors[0].clone(), errors[1].clone()]
}

/// The first certificate of a PEM text, DER.
pub fn first_cert(pem: &[u8]) -> Vec<u8> {
    cert::parse_pem_certificates(pem, "pem")
        .unwrap()
        .into_iter()
        .next()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Real Pods (tests/tests/pods.rs): istiod as a Deployment on a node, and trust checked all the
// time from the certificates istiods issue.

impl Federation {
    /// Runs istiod as a Pod on member `name`'s node, with `trust_domain` in its mesh config and
    /// `ISTIO_MULTIROOT_MESH=true`; waits for the rollout.
    pub async fn start_istiod_pod(&self, name: &str, trust_domain: &str) -> IstiodPod {
        self.testbed
            .start_istiod_pod(name, IstiodOptions::new(trust_domain))
            .await
            .unwrap_or_else(|e| panic!("istiod Pod of {name}: {e}"))
    }
}

/// A workload of `cluster` in `ns` running as ServiceAccount `ns/sa`, with a fresh certificate
/// from the ready istiod Pod and the bundle that istiod published in `ns`.
pub async fn pod_workload(
    cluster: &Cluster,
    istiod: &IstiodPod,
    ns: &str,
    sa: &str,
) -> Result<Workload, String> {
    let addr = istiod.serving_addr().await.map_err(|e| e.to_string())?;
    let cert = request_workload_cert_at(cluster, addr, ns, sa, Duration::from_secs(600))
        .await
        .map_err(|e| format!("certificate from istiod {addr} of {}: {e}", cluster.name()))?;
    let trust = wait_published_roots(cluster, ns).await;
    Workload::new(cert, trust.as_bytes()).map_err(|e| e.to_string())
}

/// What a [`TrustWatch`] saw.
#[derive(Debug, Default, Clone)]
pub struct TrustReport {
    /// Rounds in which every pair was checked.
    pub rounds: usize,
    /// Every failure, `<seconds since start>: <what>`.
    pub failures: Vec<String>,
    /// The distinct issuers (cluster CA SHA-256, first 12 hex) seen per cluster, in order.
    pub issuers: BTreeMap<String, Vec<String>>,
}

/// Checks trust between every pair of members all the time, in the background, the way a
/// mesh would see a gap: each round, every member's istiod Pod issues a fresh workload
/// certificate, each workload trusts what its istiod publishes, and every pair completes a
/// mutual-TLS handshake both ways.
pub struct TrustWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<TrustReport>,
}

impl TrustWatch {
    /// Starts watching `members` (cluster and its istiod Pod).
    pub fn start(members: Vec<(Cluster, IstiodPod)>) -> TrustWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut report = TrustReport::default();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let mut workloads = Vec::new();
                for (cluster, istiod) in &members {
                    match pod_workload(cluster, istiod, "web", "web").await {
                        Ok(w) => {
                            let issuer =
                                cert::fingerprint(&w.cert().chain_der()[1])[..12].to_owned();
                            let seen = report.issuers.entry(cluster.name().to_owned()).or_default();
                            if seen.last() != Some(&issuer) {
                                seen.push(issuer);
                            }
                            workloads.push((cluster.name().to_owned(), w));
                        }
                        Err(e) => report
                            .failures
                            .push(format!("{:.1}s: {e}", started.elapsed().as_secs_f64())),
                    }
                }
                for (i, (a, wa)) in workloads.iter().enumerate() {
                    for (b, wb) in &workloads[i + 1..] {
                        for (client, server, c, s) in [(wa, wb, a, b), (wb, wa, b, a)] {
                            if let Err(e) = mtls::handshake(client, server).await {
                                report.failures.push(format!(
                                    "{:.1}s: trust gap {c} -> {s}: {e}",
                                    started.elapsed().as_secs_f64()
                                ));
                            }
                        }
                    }
                }
                if workloads.len() == members.len() {
                    report.rounds += 1;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            report
        });
        TrustWatch { stop, task }
    }

    /// Starts checking, every `every`, what the members' `cacerts` allow: each member mints a
    /// workload certificate for its trust domain from its own `cacerts` (as istiod would) and
    /// every member's `root-cert.pem` must verify it. `members`: cluster and trust domain.
    /// A round counts when every `cacerts` could be read.
    pub fn start_cacerts(members: Vec<(Cluster, String)>, every: Duration) -> TrustWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut report = TrustReport::default();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let mut files = Vec::new();
                for (cluster, td) in &members {
                    if let Some(f) = cacerts_of(cluster).await {
                        files.push((cluster.name().to_owned(), td.clone(), f));
                    }
                }
                if files.len() == members.len() {
                    report.rounds += 1;
                }
                for (from, td, f) in &files {
                    let issuer = f
                        .get(cacerts::CA_CERT)
                        .map(|pem| cert::fingerprint(&first_cert(pem))[..12].to_owned())
                        .unwrap_or_default();
                    let seen = report.issuers.entry(from.clone()).or_default();
                    if seen.last() != Some(&issuer) {
                        seen.push(issuer);
                    }
                    let leaf = mint_leaf(f, &format!("spiffe://{td}/ns/a/sa/b"));
                    for (to, _, g) in &files {
                        if let Err(e) = verifies(&leaf, g) {
                            report.failures.push(format!(
                                "{:.1}s: trust gap {from} at {to}: {e}",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                    }
                }
                tokio::time::sleep(every).await;
            }
            report
        });
        TrustWatch { stop, task }
    }

    /// Stops and returns what was seen.
    pub async fn stop(self) -> TrustReport {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.unwrap()
    }
}
