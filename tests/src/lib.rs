//! A harness for end-to-end tests: a testbed with a hub cluster and members, the `federator`
//! and `cluster-agent` binaries run as real processes, and helpers to wait for and check trust.
//!
//! The binaries are the workspace's own (`target/<profile>/federator`, `.../cluster-agent`);
//! `cargo test --workspace` and `cargo nextest run --workspace` build them before any test runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use testbed::{Cluster, Process, ProcessSpec, Testbed, TestbedOptions};
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

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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
    /// Scratch directory for logs and files.
    pub dir: PathBuf,
}

impl Federation {
    /// Starts a testbed with a cluster `hub` plus the named members, and runs `federator init`
    /// with `init_args`.
    pub async fn start(members: &[(&str, &str)], init_args: &[&str]) -> Federation {
        Self::start_on("hub", members, init_args, None).await
    }

    /// Like [`Federation::start`], with the hub in cluster `hub` — which may be one of the
    /// members — and the testbed in `dir` (a temporary directory when `None`).
    pub async fn start_on(hub: &str, members: &[(&str, &str)], init_args: &[&str], dir: Option<PathBuf>) -> Federation {
        let fed = Self::without_init(hub, members, dir).await;
        let mut args = vec!["init"];
        args.extend_from_slice(init_args);
        fed.federator_ok(&args);
        fed
    }

    /// The testbed and the member records, without `federator init` (for tests that need
    /// something else first, such as OpenBao).
    pub async fn without_init(hub: &str, members: &[(&str, &str)], dir: Option<PathBuf>) -> Federation {
        let mut names: Vec<String> = members.iter().map(|(n, _)| (*n).to_owned()).collect();
        if !names.iter().any(|n| n == hub) {
            names.insert(0, hub.to_owned());
        }
        let mut opts = TestbedOptions::named(names);
        if let Some(d) = dir {
            opts = opts.dir(d);
        }
        let testbed = Testbed::start(opts).await.unwrap();
        let dir = testbed.dir().to_path_buf();
        let hub = testbed.cluster(hub).unwrap().clone();
        let mut fed = Federation {
            hub,
            members: BTreeMap::new(),
            serve: None,
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

    /// Joins a member with an external agent.
    pub fn join(&self, name: &str) -> String {
        let m = &self.members[name];
        self.federator_ok(&[
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
        ])
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

    /// Starts `federator serve` (killed when the Federation drops).
    pub fn start_serve(&mut self, extra: &[&str]) {
        let mut spec = ProcessSpec::new(
            "federator-serve",
            bin("federator"),
            self.dir.join("serve.log"),
        )
        .args(["serve", "--log-level", "info"])
        .env("FEDERATOR_HUB_KUBECONFIG", self.hub.kubeconfig_path());
        for a in extra {
            spec = spec.arg(*a);
        }
        self.serve = Some(Process::spawn(spec).unwrap());
    }

    /// Starts a member's agent (killed when the Federation drops).
    pub fn start_agent(&mut self, name: &str) {
        let log = self.dir.join(format!("{name}-agent.log"));
        let m = self.members.get_mut(name).unwrap();
        let spec = ProcessSpec::new(format!("{name}-agent"), bin("cluster-agent"), log).args([
            "--kubeconfig",
            m.agent_kubeconfig.to_str().unwrap(),
            "--cluster-name",
            name,
            "--log-level",
            "info",
        ]);
        m.agent = Some(Process::spawn(spec).unwrap());
    }

    /// A member's `cacerts` as files, if it exists.
    pub async fn cacerts(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let api: Api<Secret> = Api::namespaced(
            self.members[name].cluster.client().await.ok()?,
            names::ISTIO_NAMESPACE,
        );
        let s = api.get_opt(names::CACERTS_SECRET).await.ok()??;
        Some(s.data?.into_iter().map(|(k, v)| (k, v.0)).collect())
    }

    /// A member's `ClusterTrust`.
    pub async fn cluster_trust(&self, name: &str) -> Option<ClusterTrust> {
        let api: Api<ClusterTrust> = Api::namespaced(
            self.members[name].cluster.client().await.ok()?,
            names::NAMESPACE,
        );
        api.get_opt(names::CLUSTER_TRUST).await.ok()?
    }

    /// A member's `MemberCluster` on the hub.
    pub async fn member_cluster(&self, name: &str) -> Option<MemberCluster> {
        let api: Api<MemberCluster> =
            Api::namespaced(self.hub.client().await.ok()?, names::NAMESPACE);
        api.get_opt(name).await.ok()?
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

/// Writes files to a directory (for the openssl CLI).
pub fn write_dir(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, v) in files {
        std::fs::write(dir.join(k), v).unwrap();
    }
}

/// `openssl verify -x509_strict` of `cert` against `roots`, with optional untrusted chain.
pub fn openssl_verify(cert: &Path, roots: &Path, untrusted: Option<&Path>) -> bool {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-CAfile"]).arg(roots);
    if let Some(u) = untrusted {
        cmd.arg("-untrusted").arg(u);
    }
    cmd.arg(cert).output().unwrap().status.success()
}
