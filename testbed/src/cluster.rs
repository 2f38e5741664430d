//! One simulated cluster: a real kube-apiserver with its own PKI and service-account issuer.
//!
//! Files under `DIR/<cluster>/`:
//! `kubeconfig` (admin, embedded credentials, 0600), `ca.crt` (serving CA), `client-ca.crt` and
//! `client-ca.key` (0600), `serving.crt`/`serving.key`, `sa.key`/`sa.pub`, `admin.crt`/`admin.key`,
//! and `kube-apiserver.log`.
//!
//! In a testbed with nodes, every apiserver is also reached through every node's bridge
//! address (see [`Cluster::server_from`]): its serving certificate names each of them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

use crate::kubeconfig::{self, Credentials};
use crate::node::NodeNetwork;
use crate::pki::{self, Ca, CertAndKey};
use crate::process::{self, ProcessSpec};
use crate::{Error, Result};

/// How long an apiserver may take to answer `/readyz` (several start in parallel on 2 cores).
const READY_TIMEOUT: Duration = Duration::from_secs(180);
const ATTEMPTS: u32 = 5;
/// The service CIDR every simulated cluster uses (nothing routes it: there is no kube-proxy).
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// The apiserver's audit policy: every request a ServiceAccount or a client certificate in
/// group [`AUDITED_GROUP`] makes, at `Metadata` level (who, with which credential, what; no
/// bodies), once it completed or a watch started. Requests of the admin and of the control
/// plane are not logged.
pub const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [\"system:serviceaccounts\", \"testbed:audited\"]
- level: None
";

/// A group whose members' requests the audit log records ([`AUDIT_POLICY`]): put it in a
/// client certificate ([`Cluster::kubeconfig_for_user`]) to count what a process does with
/// admin rights (e.g. the fleet benchmark's hub).
pub const AUDITED_GROUP: &str = "testbed:audited";

/// A handle to one simulated cluster. Cheap to clone; all clones control the same apiserver.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    dir: PathBuf,
    port: u16,
    server: String,
    issuer: String,
    ca_pem: String,
    client_ca: Ca,
    admin: CertAndKey,
    kubeconfig: PathBuf,
    spec: ProcessSpec,
    process: process::Slot,
    network: Option<NodeNetwork>,
    /// The bridge addresses (`.1`) of every node of the testbed, which the serving
    /// certificate names.
    node_gateways: Vec<Ipv4Addr>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.inner.name)
            .field("server", &self.inner.server)
            .field("kubeconfig", &self.inner.kubeconfig)
            .finish_non_exhaustive()
    }
}

/// The service-account issuer of cluster `name` (distinct per cluster; never resolvable).
pub fn issuer_for(name: &str) -> String {
    format!("https://{name}.testbed.invalid")
}

impl Cluster {
    /// Generates the cluster's PKI under `dir` and starts its apiserver against etcd `etcd_url`,
    /// retrying on another port if the chosen one was taken meanwhile.
    ///
    /// With a node `network`, the apiserver is set up for a node (see [`crate::node`]): its
    /// serving certificate also names the node network's gateway (the `kubernetes` Service's
    /// ClusterIP, what Pods connect to) and the Service's DNS names, its service range is the
    /// node network's `/28`, the ServiceAccount admission plugin is on (it mounts Pods' tokens),
    /// and the Node authorizer and NodeRestriction admission apply to the kubelet.
    ///
    /// `node_gateways` are the bridge addresses of every node of the testbed (this cluster's
    /// own included): the serving certificate names them all, so a client on any node's
    /// network verifies the apiserver reached through that node's forwarder.
    ///
    /// `extra_args` go to the apiserver after the testbed's own flags.
    pub(crate) async fn start(
        name: &str,
        dir: &Path,
        apiserver: &Path,
        etcd_url: &str,
        network: Option<&NodeNetwork>,
        node_gateways: &[Ipv4Addr],
        extra_args: &[String],
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let serving_ca = Ca::new(&format!("{name} serving CA"))?;
        let client_ca = Ca::new(&format!("{name} client CA"))?;
        let mut node_gateways = node_gateways.to_vec();
        if let Some(n) = network
            && !node_gateways.contains(&n.gateway())
        {
            node_gateways.push(n.gateway());
        }
        let ips: Vec<IpAddr> = node_gateways.iter().map(|g| (*g).into()).collect();
        let serving = match network {
            None => serving_ca.issue_serving_for("kube-apiserver", &ips, &[])?,
            Some(_) => serving_ca.issue_serving_for(
                "kube-apiserver",
                &ips,
                &[
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ],
            )?,
        };
        let admin = client_ca.issue_client("admin", &["system:masters"])?;
        let (sa_key, sa_pub) = pki::service_account_key()?;
        let ca_pem = serving_ca.cert_pem();

        let f = |n: &str| dir.join(n);
        pki::write_public(&f("ca.crt"), &ca_pem)?;
        pki::write_public(&f("serving.crt"), &serving.cert_pem)?;
        pki::write_private(&f("serving.key"), &serving.key_pem)?;
        pki::write_public(&f("client-ca.crt"), &client_ca.cert_pem())?;
        pki::write_private(&f("client-ca.key"), client_ca.key_pem())?;
        pki::write_public(&f("admin.crt"), &admin.cert_pem)?;
        pki::write_private(&f("admin.key"), &admin.key_pem)?;
        pki::write_private(&f("sa.key"), &sa_key)?;
        pki::write_public(&f("sa.pub"), &sa_pub)?;
        std::fs::write(f("audit-policy.yaml"), AUDIT_POLICY)
            .map_err(Error::io("write", &f("audit-policy.yaml")))?;
        let cert_dir = f("cert-dir");
        std::fs::create_dir_all(&cert_dir).map_err(Error::io("create", &cert_dir))?;

        let issuer = issuer_for(name);
        let kubeconfig = f("kubeconfig");
        let admin_creds = Credentials::ClientCert {
            cert_pem: admin.cert_pem.clone(),
            key_pem: admin.key_pem.clone(),
        };

        for attempt in 1..=ATTEMPTS {
            let port = process::pick_port()?;
            let server = format!("https://127.0.0.1:{port}");
            let spec = ProcessSpec::new(
                format!("{name}/kube-apiserver"),
                apiserver,
                f("kube-apiserver.log"),
            )
            .args([
                format!("--etcd-servers={etcd_url}"),
                format!("--etcd-prefix=/registry-{name}"),
                "--bind-address=127.0.0.1".to_owned(),
                "--advertise-address=127.0.0.1".to_owned(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", cert_dir.display()),
                format!("--tls-cert-file={}", f("serving.crt").display()),
                format!("--tls-private-key-file={}", f("serving.key").display()),
                format!("--client-ca-file={}", f("client-ca.crt").display()),
                format!("--service-account-issuer={issuer}"),
                format!("--api-audiences={issuer}"),
                format!("--service-account-key-file={}", f("sa.pub").display()),
                format!(
                    "--service-account-signing-key-file={}",
                    f("sa.key").display()
                ),
                // Nothing routes Services here, and Endpoints may not hold a loopback address.
                "--endpoint-reconciler-type=none".to_owned(),
                "--allow-privileged=true".to_owned(),
                format!("--audit-policy-file={}", f("audit-policy.yaml").display()),
                format!("--audit-log-path={}", f("audit.log").display()),
                "--audit-log-maxsize=200".to_owned(),
                "--audit-log-maxbackup=1".to_owned(),
            ])
            .args(match network {
                None => vec![
                    format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                    "--authorization-mode=RBAC".to_owned(),
                    // No controller-manager creates the `default` ServiceAccounts this plugin
                    // demands.
                    "--disable-admission-plugins=ServiceAccount".to_owned(),
                ],
                Some(n) => vec![
                    format!("--service-cluster-ip-range={}", n.service_cidr()),
                    "--authorization-mode=Node,RBAC".to_owned(),
                    "--enable-admission-plugins=NodeRestriction".to_owned(),
                ],
            })
            .args(extra_args);
            kubeconfig::write(&kubeconfig, name, &server, &ca_pem, "admin", &admin_creds)?;
            let client = client_from_file(&kubeconfig).await?;
            match process::spawn_until_ready(spec.clone(), READY_TIMEOUT, || readyz(client.clone()))
                .await
            {
                Ok(p) => {
                    return Ok(Self {
                        inner: Arc::new(Inner {
                            name: name.to_owned(),
                            dir: dir.to_owned(),
                            port,
                            server,
                            issuer,
                            ca_pem,
                            client_ca,
                            admin,
                            kubeconfig,
                            spec,
                            process: process::Slot::new(p),
                            network: network.cloned(),
                            node_gateways: node_gateways.clone(),
                        }),
                    });
                }
                Err(e) if process::is_port_conflict(&e) => {
                    tracing::info!(
                        cluster = name,
                        attempt,
                        port,
                        "apiserver port taken, picking another"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::PortsExhausted {
            name: format!("{name}/kube-apiserver"),
            attempts: ATTEMPTS,
        })
    }

    /// The node network, when the cluster has a node (see [`crate::node`]).
    pub fn node_network(&self) -> Option<&NodeNetwork> {
        self.inner.network.as_ref()
    }

    /// The https URL at which Pods on `node`'s node (and the host) reach this cluster's
    /// apiserver, TLS verified against [`Cluster::ca_pem`]: `https://<gateway>:<port>`, where
    /// `<gateway>` is the `.1` of `node`'s bridge. For `node` itself that is the `kubernetes`
    /// Service (port 443); for another cluster of the testbed, `node`'s forwarder listens on
    /// the gateway at the port this apiserver has on 127.0.0.1 ([`Cluster::port`]).
    ///
    /// Errors if `node` has no node, or is not of this cluster's testbed (this apiserver's
    /// certificate does not name its gateway).
    pub fn server_from(&self, node: &Cluster) -> Result<String> {
        let Some(net) = node.node_network() else {
            return Err(Error::Api(format!(
                "cluster {} has no node: start the testbed with it in TestbedOptions::nodes (testbed up --nodes)",
                node.name()
            )));
        };
        let gateway = net.gateway();
        if !self.inner.node_gateways.contains(&gateway) {
            return Err(Error::Api(format!(
                "the apiserver of cluster {} is not reachable from {}'s node at {gateway}: the clusters are not of the same testbed",
                self.name(),
                node.name()
            )));
        }
        let port = if self.name() == node.name() && self.dir() == node.dir() {
            443
        } else {
            self.port()
        };
        Ok(format!("https://{gateway}:{port}"))
    }

    /// The addresses of the testbed's node bridges (`.1`) the serving certificate names,
    /// besides `127.0.0.1` and `localhost`.
    pub fn node_gateways(&self) -> &[Ipv4Addr] {
        &self.inner.node_gateways
    }

    /// The admin kubeconfig (YAML) with [`Cluster::server_from`]`(node)` as its server.
    pub fn kubeconfig_from(&self, node: &Cluster) -> Result<String> {
        kubeconfig::render(
            self.name(),
            &self.server_from(node)?,
            self.ca_pem(),
            "admin",
            &self.admin_creds(),
        )
    }

    /// Writes [`Cluster::kubeconfig_from`]`(node)` to `path` (mode 0600), e.g. for a Secret
    /// that a Pod on `node`'s node mounts, or for `federator join --kubeconfig`.
    pub fn write_kubeconfig_from(&self, node: &Cluster, path: &Path) -> Result<()> {
        pki::write_private(path, &self.kubeconfig_from(node)?)
    }

    fn admin_creds(&self) -> Credentials {
        Credentials::ClientCert {
            cert_pem: self.inner.admin.cert_pem.clone(),
            key_pem: self.inner.admin.key_pem.clone(),
        }
    }

    /// The cluster's name (`cluster-1`, ...), also its kubeconfig context and cluster name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `https://127.0.0.1:<port>`
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The apiserver's port (fixed for the cluster's life, also across stop/start).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The admin kubeconfig (`DIR/<cluster>/kubeconfig`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.inner.kubeconfig
    }

    /// The CA that signed the apiserver's serving certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.inner.ca_pem
    }

    /// The CA the apiserver trusts for client certificates, PEM.
    pub fn client_ca_pem(&self) -> String {
        self.inner.client_ca.cert_pem()
    }

    /// The service-account token issuer (`iss`), also the apiserver's API audience.
    pub fn service_account_issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The apiserver's log file.
    pub fn log_path(&self) -> &Path {
        &self.inner.spec.log
    }

    /// The apiserver's pid (and process group), if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.inner.process.pid()
    }

    /// Whether the apiserver process runs.
    pub fn is_running(&self) -> bool {
        self.inner.process.is_running()
    }

    /// A kube client with the admin identity (CN=admin, O=system:masters).
    pub async fn client(&self) -> Result<kube::Client> {
        client_from_file(&self.inner.kubeconfig).await
    }

    /// A kubeconfig (YAML) for this cluster that authenticates with a bearer `token`.
    pub fn kubeconfig_for_token(&self, token: &str) -> Result<String> {
        kubeconfig::render(
            self.name(),
            self.server(),
            self.ca_pem(),
            "token",
            &Credentials::Token(token.to_owned()),
        )
    }

    /// A kubeconfig (YAML) for this cluster with a fresh client certificate for `user` in
    /// `groups`, signed by the cluster's client CA.
    pub fn kubeconfig_for_user(&self, user: &str, groups: &[&str]) -> Result<String> {
        let cert = self.inner.client_ca.issue_client(user, groups)?;
        kubeconfig::render(
            self.name(),
            self.server(),
            self.ca_pem(),
            user,
            &Credentials::ClientCert {
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem,
            },
        )
    }

    /// Writes a kubeconfig (mode 0600) for a bearer `token` to `path`.
    pub fn write_kubeconfig_for_token(&self, token: &str, path: &Path) -> Result<()> {
        pki::write_private(path, &self.kubeconfig_for_token(token)?)
    }

    /// Writes a kubeconfig (mode 0600) for a client certificate of `user`/`groups` to `path`.
    pub fn write_kubeconfig_for_user(
        &self,
        user: &str,
        groups: &[&str],
        path: &Path,
    ) -> Result<()> {
        pki::write_private(path, &self.kubeconfig_for_user(user, groups)?)
    }

    /// A kube client that authenticates with a bearer `token`.
    pub async fn client_for_token(&self, token: &str) -> Result<kube::Client> {
        client_from_yaml(&self.kubeconfig_for_token(token)?).await
    }

    /// A kube client acting as `user` in `groups` (client certificate).
    pub async fn client_for_user(&self, user: &str, groups: &[&str]) -> Result<kube::Client> {
        client_from_yaml(&self.kubeconfig_for_user(user, groups)?).await
    }

    /// The admin client certificate and key.
    pub fn admin_credentials(&self) -> &CertAndKey {
        &self.inner.admin
    }

    /// Mints a token for ServiceAccount `namespace/name` through the TokenRequest API.
    /// `audiences` empty means the apiserver's own audience (its issuer).
    pub async fn token_request(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
        expiration_seconds: Option<i64>,
    ) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
                expiration_seconds,
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = api
            .create_token_request(name, &PostParams::default(), &req)
            .await?;
        resp.status.and_then(|s| s.token).ok_or_else(|| {
            Error::Api(format!(
                "TokenRequest for {namespace}/{name} returned no token"
            ))
        })
    }

    /// The apiserver's audit log (JSON lines, `audit.k8s.io/v1` Events): every request of a
    /// ServiceAccount at `Metadata` level ([`AUDIT_POLICY`]), so a test can see which token a
    /// client used (`user.extra["authentication.kubernetes.io/credential-id"]`, `JTI=<jti>`).
    pub fn audit_log_path(&self) -> PathBuf {
        self.inner.dir.join("audit.log")
    }

    /// Stops the apiserver (SIGTERM, SIGKILL after 10 s): the cluster becomes unreachable.
    pub async fn stop(&self) {
        if self.inner.process.stop(Duration::from_secs(10)).await {
            tracing::info!(cluster = self.name(), "apiserver stopped");
        }
    }

    /// Starts the apiserver again on the same port with the same keys (no-op if it runs) and
    /// waits for `/readyz`.
    pub async fn start_again(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let client = self.client().await?;
        let p = process::spawn_until_ready(self.inner.spec.clone(), READY_TIMEOUT, || {
            readyz(client.clone())
        })
        .await?;
        self.inner.process.put(p);
        tracing::info!(cluster = self.name(), "apiserver started again");
        Ok(())
    }

    /// Freezes the apiserver (SIGSTOP): connections hang instead of being refused.
    pub fn pause(&self) {
        self.inner.process.pause();
    }

    /// Resumes a paused apiserver (SIGCONT).
    pub fn resume(&self) {
        self.inner.process.resume();
    }

    /// Kills the apiserver now (used when the testbed goes down).
    pub(crate) fn kill(&self) {
        self.inner.process.kill();
    }
}

/// `GET /readyz` answered `ok`.
pub async fn readyz(client: kube::Client) -> bool {
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(req).await, Ok(body) if body.trim() == "ok")
}

/// A kube client from a kubeconfig file (its current context).
pub async fn client_from_file(path: &Path) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(path)?;
    client_from_kubeconfig(kc).await
}

/// A kube client from kubeconfig YAML (its current context).
pub async fn client_from_yaml(yaml: &str) -> Result<kube::Client> {
    let kc = Kubeconfig::from_yaml(yaml)?;
    client_from_kubeconfig(kc).await
}

async fn client_from_kubeconfig(kc: Kubeconfig) -> Result<kube::Client> {
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    // Fail fast when a cluster is stopped (tests simulate outages).
    cfg.connect_timeout = Some(Duration::from_secs(5));
    Ok(kube::Client::try_from(cfg)?)
}
