//! # cluster-agent
//!
//! The agent that runs in every member cluster of a federation. It generates the cluster's
//! intermediate CA key **in the cluster** (it never leaves), publishes only a CSR for the hub
//! to sign, validates the chain that comes back, installs it as Istio's plug-in CA
//! (`istio-system/cacerts`) together with the federation's trust bundle, lists peers of other
//! trust domains in the mesh config, restarts istiod only when istiod cannot hot-reload, and
//! reports what it did in the status of `ClusterTrust` `federator-system/local`.
//!
//! It talks only to its own cluster's API server; the hub is invisible to it (see
//! `docs/architecture.md` for the exchange and `docs/agent.md` for the agent).
//!
//! | module | what it holds |
//! |---|---|
//! | [`logic`] | every decision, with no I/O (unit-tested) |
//! | [`reconcile`] | one reconcile: reads, decisions, writes |
//! | [`controller`] | the kube-runtime controller and its watches |
//! | [`health`] | `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`): the metrics and the probes |

#![forbid(unsafe_code)]

pub mod controller;
mod error;
pub mod health;
pub mod logic;
pub mod reconcile;

use std::path::Path;

use kube::Client;
use kube::config::Config;

pub use controller::run;
pub use error::{Error, Result};
pub use health::Health;

/// How the agent runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The cluster this agent serves (`--cluster-name`). When set, a `ClusterTrust` naming
    /// another cluster is refused; when the spec names none, this name is used.
    pub cluster_name: Option<String>,
    /// Where reconciles report for the readiness endpoint.
    pub health: Health,
}

/// A client for the cluster: from `kubeconfig` (and `context`, else its current context)
/// when given, else the in-cluster configuration (the pod's ServiceAccount).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => federator_api::plumbing::config_from_file(path, context)
            .await
            .map_err(|source| Error::Kubeconfig {
                path: path.to_owned(),
                source,
            })?,
        None if context.is_some() => return Err(Error::ContextWithoutKubeconfig),
        None => Config::incluster().map_err(Error::NotInCluster)?,
    };
    Client::try_from(config).map_err(|e| Error::Client(Box::new(e)))
}
