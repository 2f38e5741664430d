//! The `federator` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use federator_core::identity::{ClusterName, TrustDomain};
use federator_core::key::KeyAlgorithm;

/// Multi-cluster trust federation for Istio.
#[derive(Debug, Parser)]
#[command(name = "federator", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. info or federator=debug.
    #[arg(long, global = true, env = "FEDERATOR_LOG", default_value = "warn")]
    pub log_level: String,
    /// Log format: `text` or `json` (one JSON object per line, for a log collector).
    #[arg(long, global = true, env = "FEDERATOR_LOG_FORMAT", default_value = "text", value_parser = parse_log_format)]
    pub log_format: federator_api::logging::LogFormat,
    /// Kubeconfig of the hub cluster (default: $KUBECONFIG or ~/.kube/config, else the in-cluster
    /// config, as in a Pod).
    #[arg(long, global = true, env = "FEDERATOR_HUB_KUBECONFIG")]
    pub hub_kubeconfig: Option<PathBuf>,
    /// Context in the hub kubeconfig (default: its current context).
    #[arg(long, global = true, env = "FEDERATOR_HUB_CONTEXT")]
    pub hub_context: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offline, file-based CA tools: a drop-in for Istio's tools/certs Makefiles.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Initialise the hub: CRDs, namespace, the Federation object and the root.
    Init(Box<InitArgs>),
    /// Join a cluster to the federation.
    #[command(subcommand)]
    Join(JoinCommand),
    /// Remove a cluster from the federation.
    #[command(subcommand)]
    Leave(LeaveCommand),
    /// Show every member's trust state; exits 1 when any member is unhealthy.
    Status(StatusArgs),
    /// Run the reconciler.
    Serve(ServeArgs),
    /// Print the federation's trust bundle (the roots every member trusts).
    Bundle(BundleArgs),
    /// Rotate the root without downtime — a trust domain's (local backend), the imported CA
    /// (--cert, --key) or the Vault issuer (--vault-issuer, --vault-bootstrap) — or abort a
    /// rotation (--abort): `serve` has every member trust both roots, moves the members to the
    /// new root, then drops the old one.
    RotateRoot(RotateRootArgs),
    /// Re-issue a member's cluster CA now (a fresh key in the member, a new serial): after a
    /// suspected key compromise, or a restore.
    #[command(subcommand)]
    Renew(RenewCommand),
    /// Check a cluster's Istio for federator, before or after join: istiod's version and the
    /// rules it follows, `ISTIO_MULTIROOT_MESH`, the mesh config's trust domain and
    /// `PROXY_CONFIG_XDS_AGENT`, `cacerts` (valid? written by federator?), the roots istiod
    /// serves, the federation's exchange object. Reads only; exits 1 when it finds a problem.
    Doctor(DoctorArgs),
    /// Trust a foreign SPIFFE trust domain (e.g. a SPIRE server's), fetched from its bundle
    /// endpoint by `serve`, or stop trusting it.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Print the four CRDs (Federation, MemberCluster, ClusterTrust, ForeignTrustDomain) as `init` installs them,
    /// as YAML documents: for `kubectl apply -f -` or a Helm chart's `crds/`.
    Crds,
    /// Print a shell completion script: `source <(federator completion bash)`.
    Completion(CompletionArgs),
}

/// `federator trust ...`
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust DOMAIN: its endpoint is fetched once from here (nothing is written if that
    /// fails), then `serve` fetches its SPIFFE bundle by its refresh hint and gives every
    /// member its roots (istiod's mesh config `caCertificates` with `trustDomains: [DOMAIN]`;
    /// `root-cert.pem` too with --mesh-wide).
    Add(TrustAddArgs),
    /// Stop trusting DOMAIN: `serve` removes its roots from every member.
    Remove(TrustRemoveArgs),
}

/// A bundle endpoint profile (SPIFFE Federation §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Web PKI: the server's certificate against the system's CA certificates.
    #[value(name = "https_web")]
    HttpsWeb,
    /// The server presents an X509-SVID of the foreign trust domain.
    #[value(name = "https_spiffe")]
    HttpsSpiffe,
}

/// `federator trust add`
#[derive(Debug, Args)]
pub struct TrustAddArgs {
    /// The foreign trust domain, e.g. spire.example.
    pub domain: String,
    /// Its SPIFFE bundle endpoint URL (https://…).
    #[arg(long)]
    pub bundle_endpoint: String,
    /// How the endpoint is authenticated.
    #[arg(long, value_enum, default_value = "https_web")]
    pub profile: ProfileArg,
    /// With https_spiffe: the SPIFFE ID the endpoint's server presents
    /// (SPIRE: spiffe://DOMAIN/spire/server).
    #[arg(long)]
    pub endpoint_spiffe_id: Option<String>,
    /// With https_spiffe: the domain's current bundle (SPIFFE bundle or PEM), to authenticate
    /// the first fetch (SPIRE: `spire-server bundle show -format spiffe`).
    #[arg(long)]
    pub bootstrap_bundle: Option<PathBuf>,
    /// Also put the domain's roots into every member's root-cert.pem: every workload then
    /// trusts certificates of that domain's CAs, not only istiod's SPIFFE checks.
    #[arg(long)]
    pub mesh_wide: bool,
    /// Write the domain without fetching its endpoint from this machine first (when only the
    /// hub can reach it, or trusts its server certificate). `serve` still refuses what it
    /// cannot fetch or accept, and says so in `status`.
    #[arg(long)]
    pub no_fetch: bool,
}

/// `federator trust remove`
#[derive(Debug, Args)]
pub struct TrustRemoveArgs {
    /// The foreign trust domain.
    pub domain: String,
}

/// `federator completion`
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Shells `completion` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// `federator doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Kubeconfig of the cluster to check (a member, or one about to join).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Context in that kubeconfig.
    #[arg(long)]
    pub context: Option<String>,
    /// The trust domain the cluster will join with, to check the mesh config against (a
    /// joined cluster's is read from the federation).
    #[arg(long, value_parser = parse_trust_domain)]
    pub trust_domain: Option<TrustDomain>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `federator rotate-root`
#[derive(Debug, Args)]
pub struct RotateRootArgs {
    /// Local backend: the trust domain whose root to rotate (or whose rotation to abort).
    #[arg(long, value_parser = parse_trust_domain)]
    pub trust_domain: Option<TrustDomain>,
    /// How long the old root stays trusted once every member runs on the new one: at least
    /// the lifetime of workload certificates (Istio's default is 24h).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub drain: Duration,
    /// Import backend: the new CA certificate, followed by its chain up to its root (PEM); an
    /// intermediate under another offline root is fine.
    #[arg(long, requires = "key", conflicts_with_all = ["abort", "vault_issuer", "vault_bootstrap"])]
    pub cert: Option<PathBuf>,
    /// Import backend: the new CA's key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Vault backend: the issuer (name or ID) in the PKI mount to rotate to.
    #[arg(long, conflicts_with_all = ["abort", "vault_bootstrap"], group = "vault_target")]
    pub vault_issuer: Option<String>,
    /// Vault backend: have Vault generate a new internal root in the mount
    /// (`<mount>/root/rotate/internal`) and rotate to it.
    #[arg(long, conflicts_with = "abort", group = "vault_target")]
    pub vault_bootstrap: bool,
    /// Vault backend with Kubernetes auth: the ServiceAccount token this command logs in to
    /// Vault with (the role `serve` uses), instead of the path `serve` reads it from, which
    /// exists only in its Pod. E.g. `kubectl create token SA -n federator-system > token`.
    #[arg(long, requires = "vault_target")]
    pub vault_jwt_file: Option<PathBuf>,
    /// Abort the rotation in progress (any phase before the old root is dropped): every member
    /// returns to the old root, with both roots trusted until it has.
    #[arg(long)]
    pub abort: bool,
}

/// `federator renew ...`
#[derive(Debug, Subcommand)]
pub enum RenewCommand {
    /// Re-issue one member's cluster CA.
    Cluster(RenewClusterArgs),
}

/// `federator renew cluster`
#[derive(Debug, Args)]
pub struct RenewClusterArgs {
    /// The member.
    #[arg(value_parser = parse_cluster_name)]
    pub name: ClusterName,
    /// Wait until the member runs on the re-issued CA (up to --timeout), and say so; without
    /// it, the re-issue is requested and `serve` carries it out.
    #[arg(long)]
    pub now: bool,
    /// With --now: how long to wait.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `federator bundle`
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// `pem` (what members get as root-cert.pem) or `spiffe` (a SPIFFE bundle per trust domain, JSON).
    #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
    pub format: BundleFormat,
    /// Only this trust domain.
    #[arg(long, value_parser = parse_trust_domain)]
    pub trust_domain: Option<TrustDomain>,
}

/// Bundle formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BundleFormat {
    /// Canonical PEM.
    Pem,
    /// SPIFFE trust bundles (JWK sets), keyed by trust domain.
    Spiffe,
}

/// `federator init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Root backend: `local` (a root per trust domain, generated here and kept in a hub
    /// Secret; fine for trying federator out), `import` (your CA, from --cert and --key), or
    /// `vault` (Vault/OpenBao PKI signs; see the --vault-* flags).
    #[arg(long, value_enum, default_value_t = RootKind::Local)]
    pub root: RootKind,
    /// With --root import: the CA certificate, followed by its chain up to the root (PEM).
    #[arg(long, required_if_eq("root", "import"))]
    pub cert: Option<PathBuf>,
    /// With --root import: the CA key (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, required_if_eq("root", "import"))]
    pub key: Option<PathBuf>,
    /// With --root local: the first trust domain to create a root for.
    #[arg(long, default_value = "cluster.local", value_parser = parse_trust_domain)]
    pub trust_domain: TrustDomain,
    /// With --root local: key algorithm of the roots.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_algorithm)]
    pub root_key_algorithm: KeyAlgorithm,
    /// With --root local: lifetime of the roots.
    #[arg(long, default_value = "87600h", value_parser = parse_duration)]
    pub root_ttl: Duration,
    /// With --root local: organization (O) in the roots' subjects.
    #[arg(long, default_value = "federator")]
    pub org: String,
    /// Lifetime of each cluster CA.
    #[arg(long, default_value = "720h", value_parser = parse_duration)]
    pub cluster_ca_ttl: Duration,
    /// Renew a cluster CA when this percentage of its lifetime has passed.
    #[arg(long, default_value_t = 66)]
    pub renew_at_percent: u8,
    /// Key algorithm of cluster CA keys (generated by the agents).
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_algorithm)]
    pub key_algorithm: KeyAlgorithm,
    /// Bind each cluster CA to its own trust domain with a URI name constraint, so that a
    /// stolen cluster CA key cannot sign identities of another trust domain that OpenSSL,
    /// Envoy or Go verifiers accept. Sidecar meshes only: ztunnel (ambient) rejects every
    /// certificate below such a CA, and the agents refuse to install one next to ztunnel.
    /// Not with --root vault (Vault's PKI cannot add a URI name constraint).
    #[arg(long)]
    pub constrain_to_trust_domain: bool,
    /// Vault settings, with --root vault.
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// `--root vault` settings. Secrets come from files or the environment, never from flags.
#[derive(Debug, Args)]
pub struct VaultArgs {
    /// Vault/OpenBao address.
    #[arg(long, env = "VAULT_ADDR", required_if_eq("root", "vault"))]
    pub vault_addr: Option<String>,
    /// PKI mount path.
    #[arg(long, default_value = "pki")]
    pub vault_mount: String,
    /// Issuer reference (default: the mount's default issuer).
    #[arg(long)]
    pub vault_issuer: Option<String>,
    /// Vault Enterprise namespace.
    #[arg(long, env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,
    /// Authentication method.
    #[arg(long, value_enum, default_value_t = VaultAuthKind::Token)]
    pub vault_auth: VaultAuthKind,
    /// Auth mount path (default: approle or kubernetes).
    #[arg(long)]
    pub vault_auth_mount: Option<String>,
    /// File holding the token (`token` auth); otherwise $VAULT_TOKEN.
    #[arg(long)]
    pub vault_token_file: Option<PathBuf>,
    /// AppRole role ID (not a secret).
    #[arg(long)]
    pub vault_role_id: Option<String>,
    /// File holding the AppRole secret ID; otherwise $VAULT_SECRET_ID.
    #[arg(long)]
    pub vault_secret_id_file: Option<PathBuf>,
    /// Vault role for Kubernetes auth.
    #[arg(long)]
    pub vault_role: Option<String>,
    /// File holding the hub's ServiceAccount JWT for Kubernetes auth (read at every login).
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub vault_jwt_file: PathBuf,
    /// CA bundle (PEM) for Vault's TLS certificate.
    #[arg(long)]
    pub vault_ca_file: Option<PathBuf>,
    /// Enable the PKI mount and generate a root in Vault first (for trying federator out).
    #[arg(long)]
    pub vault_bootstrap: bool,
}

/// Vault auth methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VaultAuthKind {
    /// A token (file or $VAULT_TOKEN).
    Token,
    /// AppRole (role ID flag, secret ID file or $VAULT_SECRET_ID).
    Approle,
    /// Kubernetes ServiceAccount JWT, checked by Vault with a TokenReview.
    Kubernetes,
}

/// Root backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RootKind {
    /// A root per trust domain, generated and kept by the hub.
    Local,
    /// An existing CA.
    Import,
    /// Vault / OpenBao PKI: the root key never leaves it.
    Vault,
}

/// `federator join ...`
#[derive(Debug, Subcommand)]
pub enum JoinCommand {
    /// Join a cluster, given an admin kubeconfig for it (used once; the hub keeps a narrower credential).
    Cluster(JoinClusterArgs),
}

/// `federator join cluster`
#[derive(Debug, Args)]
pub struct JoinClusterArgs {
    /// Cluster name (a DNS label).
    #[arg(value_parser = parse_cluster_name)]
    pub name: ClusterName,
    /// Admin kubeconfig of the cluster.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Context in that kubeconfig.
    #[arg(long)]
    pub context: Option<String>,
    /// The cluster's API server address as the hub (and, with remote secrets, the other
    /// members' istiods) reach it, when it differs from the admin kubeconfig's (like
    /// `istioctl create-remote-secret --server`): an https URL. The hub's stored credential
    /// and the reader kubeconfig name it; join itself uses the admin kubeconfig.
    #[arg(long, value_name = "URL", value_parser = parse_server_url)]
    pub server: Option<String>,
    /// SPIFFE trust domain of the cluster's mesh.
    #[arg(long, default_value = "cluster.local", value_parser = parse_trust_domain)]
    pub trust_domain: TrustDomain,
    /// Istio network name.
    #[arg(long, default_value = "")]
    pub network: String,
    /// Where the agent runs: `in-cluster` (a Deployment) or `external` (you start it).
    #[arg(long, value_enum, default_value_t = AgentModeArg::InCluster)]
    pub agent_mode: AgentModeArg,
    /// Agent image for --agent-mode in-cluster. The default is the image this project builds
    /// (scripts/images, or the Dockerfile): load it into the cluster's nodes, or push it to
    /// your registry and name it here.
    #[arg(long, default_value = federator_api::names::AGENT_IMAGE)]
    pub agent_image: String,
    /// With --agent-mode in-cluster: how long to wait for the agent Deployment to become
    /// available (join fails early, with the reason, when it cannot); 0s: do not wait.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    pub wait: Duration,
    /// With --agent-mode external: write a kubeconfig for the agent's identity here (0600).
    #[arg(long)]
    pub agent_kubeconfig_out: Option<PathBuf>,
    /// Lifetime of the hub's token for this cluster (`serve` renews it).
    #[arg(long, default_value = "2160h", value_parser = parse_duration)]
    pub hub_token_ttl: Duration,
    /// Remote secrets for multi-primary endpoint discovery: install a read-only identity for
    /// the other members' istiods, and have `serve` keep a remote secret for every other member
    /// in this cluster's `istio-system`. `--remote-secrets=false` if you manage discovery
    /// yourself.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub remote_secrets: bool,
}

/// Agent modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AgentModeArg {
    /// The agent runs as a Deployment in the cluster.
    InCluster,
    /// The agent runs elsewhere, with a kubeconfig.
    External,
}

/// `federator leave ...`
#[derive(Debug, Subcommand)]
pub enum LeaveCommand {
    /// Remove a cluster: its trust leaves every other member, its credential is revoked.
    Cluster(LeaveClusterArgs),
}

/// `federator leave cluster`
#[derive(Debug, Args)]
pub struct LeaveClusterArgs {
    /// Cluster name.
    #[arg(value_parser = parse_cluster_name)]
    pub name: ClusterName,
    /// When other members share the cluster's trust domain (and so its root), rotate that
    /// root, so the departed cluster's CA stops being trusted (local backend).
    #[arg(long)]
    pub rotate_trust_domain: bool,
    /// With --rotate-trust-domain: how long the old root stays trusted once every remaining
    /// member runs on the new one.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub rotation_drain: Duration,
    /// Admin kubeconfig of the cluster: also remove what join installed there (the agent
    /// Deployment, its ServiceAccounts and RBAC, the agent's key Secret, and the ClusterTrust
    /// CRD when nothing else uses it). Without it, only what the hub's own credential may
    /// remove is removed, and the rest is listed.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in that kubeconfig.
    #[arg(long, requires = "kubeconfig")]
    pub context: Option<String>,
}

/// `federator status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// A member last reached longer ago than this is unhealthy.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub stale_after: Duration,
    /// Keep watching: render again (table: redraw; json/yaml: a new document) whenever the
    /// Federation or a MemberCluster changes, until Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// `federator serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Act only while holding the `federator-leader` Lease (for several replicas).
    #[arg(long)]
    pub leader_elect: bool,
    /// Identity in the Lease (default: hostname and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Refresh each member's lastContact at least this often.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Lifetime of the members' reader tokens in the remote secrets (renewed after two thirds;
    /// the API server's minimum is 10m).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub reader_token_ttl: Duration,
    /// Renew a reader token once it is this old, when that comes before two thirds of its
    /// lifetime (default: at two thirds). Shorter than `--reader-token-ttl`. Renewal is what
    /// the other members' istiods see change (a new kubeconfig in their remote secret): a short
    /// value exercises it often while the token lifetime stays at the API server's minimum.
    #[arg(long, value_parser = parse_duration)]
    pub reader_token_renew_after: Option<Duration>,
    /// Serve Prometheus metrics (`/metrics`) and the probes (`/healthz`: liveness, `/readyz`:
    /// readiness) on this address, e.g. 0.0.0.0:9090.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the federation's SPIFFE bundles on this address, one per trust domain at
    /// `/<trust domain>`, e.g. 0.0.0.0:8443. Profile https_web needs --bundle-endpoint-cert and
    /// --bundle-endpoint-key; https_spiffe needs --bundle-endpoint-spiffe-id.
    #[arg(long)]
    pub bundle_endpoint_addr: Option<std::net::SocketAddr>,
    /// How the endpoint authenticates itself: https_web (a serving certificate you supply) or
    /// https_spiffe (an X509-SVID the hub issues itself from the federation's CA).
    #[arg(long, value_enum, default_value = "https_web")]
    pub bundle_endpoint_profile: ProfileArg,
    /// The bundle endpoint's serving certificate (PEM, then its chain), read again when it
    /// changes (e.g. a cert-manager Certificate's tls.crt).
    #[arg(long, requires = "bundle_endpoint_addr")]
    pub bundle_endpoint_cert: Option<PathBuf>,
    /// Its private key (PEM, e.g. tls.key).
    #[arg(long, requires = "bundle_endpoint_addr")]
    pub bundle_endpoint_key: Option<PathBuf>,
    /// With https_spiffe: the endpoint's SPIFFE ID, in one of the federation's trust domains
    /// (peers configure it as the endpoint SPIFFE ID), e.g.
    /// spiffe://east.example/federator/bundle-endpoint.
    #[arg(long, requires = "bundle_endpoint_addr")]
    pub bundle_endpoint_spiffe_id: Option<String>,
    /// With https_spiffe: the lifetime of the endpoint's X509-SVID (issued again at half).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub bundle_endpoint_svid_ttl: Duration,
    /// `spiffe_refresh_hint` of the served bundles: how often peers should fetch them again.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub bundle_refresh_hint: Duration,
}

impl ServeArgs {
    /// What clap cannot check alone: `--reader-token-renew-after` within the token lifetime,
    /// and the bundle endpoint's flags for its profile.
    pub fn check(&self) -> Result<(), String> {
        if self.bundle_endpoint_addr.is_some() {
            let files = self.bundle_endpoint_cert.is_some() || self.bundle_endpoint_key.is_some();
            match self.bundle_endpoint_profile {
                ProfileArg::HttpsWeb => {
                    if self.bundle_endpoint_cert.is_none() || self.bundle_endpoint_key.is_none() {
                        return Err("--bundle-endpoint-profile https_web needs --bundle-endpoint-cert and --bundle-endpoint-key (a serving certificate the peers' Web PKI trusts); or use https_spiffe with --bundle-endpoint-spiffe-id".into());
                    }
                    if self.bundle_endpoint_spiffe_id.is_some() {
                        return Err("--bundle-endpoint-spiffe-id is for --bundle-endpoint-profile https_spiffe".into());
                    }
                }
                ProfileArg::HttpsSpiffe => {
                    if files {
                        return Err("--bundle-endpoint-cert and --bundle-endpoint-key are for https_web; with https_spiffe the hub issues the endpoint's X509-SVID itself".into());
                    }
                    let Some(id) = &self.bundle_endpoint_spiffe_id else {
                        return Err("--bundle-endpoint-profile https_spiffe needs --bundle-endpoint-spiffe-id (the SPIFFE ID peers expect the endpoint to present)".into());
                    };
                    match federator_core::identity::SpiffeId::parse(id) {
                        Ok(parsed) if !parsed.path().is_empty() => {}
                        Ok(_) => {
                            return Err(format!(
                                "--bundle-endpoint-spiffe-id {id}: an X509-SVID's SPIFFE ID needs a path, e.g. {id}/federator/bundle-endpoint"
                            ));
                        }
                        Err(e) => return Err(format!("--bundle-endpoint-spiffe-id {id}: {e}")),
                    }
                    if self.bundle_endpoint_svid_ttl < Duration::from_secs(600) {
                        return Err("--bundle-endpoint-svid-ttl must be at least 10m".into());
                    }
                }
            }
        }
        match self.reader_token_renew_after {
            Some(after) if after.is_zero() || after >= self.reader_token_ttl => Err(format!(
                "--reader-token-renew-after {} must be above zero and shorter than --reader-token-ttl {}",
                federator_core::duration::format(after),
                federator_core::duration::format(self.reader_token_ttl)
            )),
            _ => Ok(()),
        }
    }
}

/// `federator ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a self-signed root CA: DIR/root-cert.pem and DIR/root-key.pem (0600).
    Init(CaInitArgs),
    /// Issue a cluster's plug-in CA (cacerts) under a root: DIR/NAME/{ca-cert,ca-key,cert-chain,root-cert}.pem.
    Issue(CaIssueArgs),
    /// Validate a cacerts directory the way istiod loads it, and describe it.
    Inspect(CaInspectArgs),
}

/// `federator ca init`
#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// Directory to write root-cert.pem and root-key.pem into.
    #[arg(long)]
    pub out: PathBuf,
    /// Key algorithm.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_algorithm)]
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime of the root.
    #[arg(long, default_value = "87600h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Organization (O) in the root's subject.
    #[arg(long, default_value = "federator")]
    pub org: String,
    /// Common name (CN) in the root's subject.
    #[arg(long, default_value = "federator root CA")]
    pub common_name: String,
    /// BasicConstraints path length of the root (at least 1, so cluster CAs fit below it).
    #[arg(long, default_value_t = 1)]
    pub path_len: u8,
}

/// `federator ca issue`
#[derive(Debug, Args)]
pub struct CaIssueArgs {
    /// Directory holding root-cert.pem and root-key.pem (from `ca init`, or Istio's tools/certs).
    /// root-cert.pem may hold an intermediate followed by its chain up to the root.
    #[arg(long)]
    pub root: PathBuf,
    /// Cluster name (a DNS label); the material goes to OUT/NAME.
    #[arg(long, value_parser = parse_cluster_name)]
    pub cluster: ClusterName,
    /// SPIFFE trust domain of the cluster's mesh.
    #[arg(long, default_value = "cluster.local", value_parser = parse_trust_domain)]
    pub trust_domain: TrustDomain,
    /// Lifetime of the cluster CA (capped at the root's expiry).
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Key algorithm of the cluster CA key (ignored with --csr).
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_algorithm)]
    pub key_algorithm: KeyAlgorithm,
    /// Sign this externally generated CSR instead of generating a key; no key is written.
    #[arg(long)]
    pub csr: Option<PathBuf>,
    /// Output directory; the material is written to OUT/NAME.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace OUT/NAME if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Bind each cluster CA to its own trust domain with a URI name constraint, so that a
    /// stolen cluster CA key cannot sign identities of another trust domain that OpenSSL,
    /// Envoy or Go verifiers accept. Sidecar meshes only: ztunnel (ambient) rejects every
    /// certificate below such a CA, and the agent refuses to install one next to ztunnel.
    #[arg(long)]
    pub constrain_to_trust_domain: bool,
}

/// `federator ca inspect`
#[derive(Debug, Args)]
pub struct CaInspectArgs {
    /// A cacerts directory (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem).
    pub dir: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `-o` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable table.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The completion script of `shell` for the whole command line.
pub fn completion(shell: Shell) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "federator", &mut out)
        }
        Shell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "federator", &mut out)
        }
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "federator", &mut out)
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    federator_core::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_key_algorithm(s: &str) -> Result<KeyAlgorithm, String> {
    s.parse().map_err(|e: federator_core::Error| e.to_string())
}

fn parse_cluster_name(s: &str) -> Result<ClusterName, String> {
    ClusterName::new(s).map_err(|e| e.to_string())
}

fn parse_log_format(s: &str) -> Result<federator_api::logging::LogFormat, String> {
    s.parse()
}

/// An API server URL for `join --server`: https, with a host, nothing after the path.
pub fn parse_server_url(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{s:?} is not an API server URL ({why}); pass it like https://api.east.example:6443"
        ))
    };
    let Some(rest) = s.strip_prefix("https://") else {
        return bad("it must start with https://");
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return bad("no host");
    }
    if s.contains(char::is_whitespace) || s.contains(['?', '#', '@']) {
        return bad("no spaces, query, fragment or user info");
    }
    match s.parse::<http::Uri>() {
        Ok(_) => Ok(s.trim_end_matches('/').to_owned()),
        Err(e) => bad(&e.to_string()),
    }
}

fn parse_trust_domain(s: &str) -> Result<TrustDomain, String> {
    TrustDomain::new(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn join(extra: &[&str]) -> Result<bool, clap::Error> {
        let mut args = vec!["federator", "join", "cluster", "east", "--kubeconfig", "k"];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args)?.command {
            Command::Join(JoinCommand::Cluster(a)) => Ok(a.remote_secrets),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completions_name_every_subcommand() {
        use clap::CommandFactory;
        let subcommands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        assert!(subcommands.len() >= 11, "{subcommands:?}");
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completion(shell);
            for sub in &subcommands {
                assert!(script.contains(sub.as_str()), "{shell:?} lacks {sub}");
            }
            // Nested ones and flags too.
            assert!(
                script.contains("rotate-root") && script.contains("leader-elect"),
                "{shell:?}"
            );
        }
        assert!(completion(Shell::Bash).contains("complete -F"));
        assert!(completion(Shell::Zsh).starts_with("#compdef federator"));
        assert!(completion(Shell::Fish).contains("complete -c federator"));
        assert!(Cli::try_parse_from(["federator", "completion", "tcsh"]).is_err());
    }

    #[test]
    fn server_urls_must_be_https_with_a_host() {
        assert_eq!(
            parse_server_url("https://10.0.0.1:6443/").unwrap(),
            "https://10.0.0.1:6443"
        );
        assert!(parse_server_url("https://api.east.example").is_ok());
        for bad in [
            "http://10.0.0.1:6443",
            "10.0.0.1:6443",
            "https://",
            "https://:6443",
            "https://a b",
            "https://x?y=1",
        ] {
            let e = parse_server_url(bad).unwrap_err();
            assert!(e.contains("not an API server URL"), "{bad}: {e}");
        }
        let err = Cli::try_parse_from([
            "federator",
            "join",
            "cluster",
            "east",
            "--kubeconfig",
            "k",
            "--server",
            "http://x",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("https://"), "{err}");
    }

    fn serve(args: &[&str]) -> Result<(), String> {
        let mut argv = vec!["federator", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Serve(a) => a.check(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reader_tokens_renew_early_only_within_their_lifetime() {
        assert_eq!(serve(&[]), Ok(()));
        let early = ["--reader-token-ttl", "10m", "--reader-token-renew-after"];
        assert_eq!(serve(&[&early[..], &["5s"]].concat()), Ok(()));
        for bad in ["10m", "1h", "0s"] {
            let err = serve(&[&early[..], &[bad]].concat()).unwrap_err();
            assert!(err.contains("shorter than --reader-token-ttl 10m"), "{err}");
        }
    }

    #[test]
    fn the_bundle_endpoint_needs_the_flags_of_its_profile() {
        let addr = ["--bundle-endpoint-addr", "127.0.0.1:8443"];
        let files = ["--bundle-endpoint-cert", "c", "--bundle-endpoint-key", "k"];
        let spiffe = ["--bundle-endpoint-profile", "https_spiffe"];
        let id = [
            "--bundle-endpoint-spiffe-id",
            "spiffe://east.example/bundles",
        ];
        assert_eq!(serve(&[&addr[..], &files].concat()), Ok(()));
        assert_eq!(serve(&[&addr[..], &spiffe, &id].concat()), Ok(()));
        for (args, says) in [
            (vec![&addr[..]], "https_web needs --bundle-endpoint-cert"),
            (
                vec![&addr[..], &files, &id],
                "is for --bundle-endpoint-profile https_spiffe",
            ),
            (
                vec![&addr[..], &spiffe],
                "needs --bundle-endpoint-spiffe-id",
            ),
            (vec![&addr[..], &spiffe, &id, &files], "are for https_web"),
            (
                vec![
                    &addr[..],
                    &spiffe,
                    &["--bundle-endpoint-spiffe-id", "spiffe://east.example"],
                ],
                "needs a path",
            ),
            (
                vec![
                    &addr[..],
                    &spiffe,
                    &["--bundle-endpoint-spiffe-id", "https://x/y"],
                ],
                "--bundle-endpoint-spiffe-id https://x/y",
            ),
            (
                vec![
                    &addr[..],
                    &spiffe,
                    &id,
                    &["--bundle-endpoint-svid-ttl", "1m"],
                ],
                "at least 10m",
            ),
        ] {
            let err = serve(&args.concat()).unwrap_err();
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }

    #[test]
    fn remote_secrets_are_on_unless_turned_off() {
        assert!(join(&[]).unwrap());
        assert!(join(&["--remote-secrets"]).unwrap());
        assert!(join(&["--remote-secrets=true"]).unwrap());
        assert!(!join(&["--remote-secrets=false"]).unwrap());
        assert!(join(&["--remote-secrets=maybe"]).is_err());
    }
}
