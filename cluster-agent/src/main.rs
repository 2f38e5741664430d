//! `cluster-agent`: installs Istio's plug-in CA in a member cluster (see `docs/agent.md`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use federator_api::logging::LogFormat;

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
    /// Serve `/metrics` (Prometheus), `/healthz` (liveness) and `/readyz` (ready once a
    /// reconcile succeeded) on this address, e.g. `0.0.0.0:9091` (what `federator join` sets
    /// in the Deployment). Off by default.
    #[arg(long, value_name = "ADDR", env = "CLUSTER_AGENT_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Log format: `text` or `json` (one JSON object per line).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = parse_log_format)]
    log_format: LogFormat,
}

// One thread: the agent runs one controller and a probe server, and a thread per core (the
// default) costs memory on every node for nothing. Key generation runs on the blocking pool.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // kube uses rustls with ring; make it the process default (an error only means another
    // provider was installed first).
    let _ = rustls::crypto::ring::default_provider().install_default();
    federator_api::logging::init(&cli.log_level, cli.log_format).map_err(anyhow::Error::msg)?;
    let health = cluster_agent::Health::default();
    let _server = match cli.metrics_addr {
        Some(addr) => Some(
            federator_api::serving::serve(addr, std::sync::Arc::new(health.clone()))
                .await
                .with_context(|| format!("--metrics-addr {addr}: cannot listen"))?
                .1,
        ),
        None => None,
    };
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

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}
