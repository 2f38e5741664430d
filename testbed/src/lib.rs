//! Real multi-cluster Kubernetes control planes on one machine, for tests and demos.
//!
//! The testbed runs, on loopback only:
//! - one `etcd` (`--unsafe-no-fsync`) shared by every simulated cluster, each cluster under its
//!   own key prefix (`/registry-<cluster>`);
//! - one real `kube-apiserver` per cluster, with its own serving CA and certificate, client CA,
//!   RBAC authorization and service-account issuer and signing key, so TokenRequest and
//!   TokenReview work and tokens of one cluster are rejected by another;
//! - on demand, an OpenBao dev server (`bao server -dev`);
//! - on demand, real istiod (`pilot-discovery`) per cluster, with stand-ins for the kubelet's
//!   Secret volume and the Deployment controller ([`istiod`], [`secret_volume`]);
//! - on the clusters asked for ([`TestbedOptions::with_nodes`]), a real node: containerd,
//!   kubelet, scheduler and controller-manager ([`node`]), with the project's images imported
//!   ([`image`]), and istiod as a Pod there ([`node::istiod`]); Pods on every node reach
//!   every cluster's apiserver through their bridge, TLS verified ([`Cluster::server_from`]).
//!
//! A cluster without a node has no kubelet, scheduler, controller-manager or garbage
//! collector: see `docs/testbed.md` for what that means for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testbed::Error> {
//! use testbed::{Testbed, TestbedOptions};
//! let tb = Testbed::start(TestbedOptions::clusters(3).with_bao()).await?;
//! let client = tb.cluster("cluster-2")?.client().await?;
//! # drop(client);
//! # Ok(()) }
//! ```
//!
//! Every child process runs in its own process group under a parent-death signal and is killed
//! when its handle is dropped; see [`process`] for which mechanism covers which case.

pub mod bao;
pub mod binaries;
pub mod cluster;
mod error;
mod etcd;
pub mod http;
pub mod image;
pub mod istiod;
pub mod kubeconfig;
pub mod node;
pub mod pki;
pub mod process;
pub mod secret_volume;
pub mod spire;
pub mod state;
mod testbed;

pub use bao::Bao;
pub use binaries::{
    Binaries, ETCD_VERSION, ISTIO_CI_VERSIONS, ISTIO_VERSION, ISTIO_VERSIONS, KUBERNETES_VERSION,
    OPENBAO_VERSION, default_bin_dir,
};
pub use cluster::{AUDITED_GROUP, Cluster};
pub use error::{Error, Result};
pub use istiod::{Istiod, IstiodOptions};
pub use node::istiod::IstiodPod;
pub use node::{Node, NodeImages, NodeOptions};
pub use process::{Process, ProcessSpec};
pub use state::State;
pub use testbed::{Testbed, TestbedOptions};
