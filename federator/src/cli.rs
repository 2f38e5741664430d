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

fn parse_duration(s: &str) -> Result<Duration, String> {
    federator_core::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_key_algorithm(s: &str) -> Result<KeyAlgorithm, String> {
    s.parse().map_err(|e: federator_core::Error| e.to_string())
}

fn parse_cluster_name(s: &str) -> Result<ClusterName, String> {
    ClusterName::new(s).map_err(|e| e.to_string())
}

fn parse_trust_domain(s: &str) -> Result<TrustDomain, String> {
    TrustDomain::new(s).map_err(|e| e.to_string())
}
