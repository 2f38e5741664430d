//! `cluster-agent`: installs Istio's plug-in CA in a member cluster (see `docs/agent.md`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// The federator agent of one member cluster.
#[derive(Debug, Parser)]
#[command(name = "cluster-agent", version, about)]
struct Cli {
    /// Kubeconfig of the cluster; without it, the in-cluster configuration is used.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig to use (default: its current context).
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    context: Option<String>,
    /// This cluster's name: refuse a ClusterTrust naming another cluster.
    #[arg(long, value_name = "NAME", env = "FEDERATOR_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives
    /// (e.g. `cluster_agent=debug,kube=info`).
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "info",
        env = "CLUSTER_AGENT_LOG"
    )]
    log_level: String,
    /// Serve `/healthz` (liveness) and `/readyz` (ready once a reconcile succeeded) on this
    /// address, e.g. `0.0.0.0:8080` (what `federator join` sets in the Deployment). Off by
    /// default.
    #[arg(long, value_name = "ADDR", env = "CLUSTER_AGENT_HEALTH_ADDR")]
    health_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // kube uses rustls with ring; make it the process default (an error only means another
    // provider was installed first).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("invalid --log-level {:?}", cli.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let health = cluster_agent::Health::default();
    if let Some(addr) = cli.health_addr {
        cluster_agent::health::serve(addr, health.clone()).await?;
    }
    let client = cluster_agent::client(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    cluster_agent::run(
        client,
        cluster_agent::Options {
            cluster_name: cli.cluster_name,
            health,
        },
    )
    .await?;
    Ok(())
}
