//! What the agent's decisions refuse, as structured errors. Each one ends up as a sentence in
//! `status.problems` (its `Display`); the trust core's error, when there is one, stays
//! reachable as the [`source`](std::error::Error::source).

use federator_core::identity::TrustDomain;

/// A problem found in what the agent read (the spec, its Secret, the mesh config).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The spec names no cluster and the agent was started without `--cluster-name`.
    #[error("spec.clusterName is empty and the agent was started without --cluster-name")]
    NoClusterName,
    /// The spec names another cluster than `--cluster-name`.
    #[error(
        "spec.clusterName is {spec:?} but this agent runs for cluster {flag:?} (--cluster-name); refusing to act for another cluster"
    )]
    OtherCluster {
        /// What the spec says.
        spec: String,
        /// What the agent was started for.
        flag: String,
    },
    /// A spec field cannot be used.
    #[error("{field}: {source}")]
    Field {
        /// The field, e.g. `spec.trustDomain`.
        field: &'static str,
        /// Why.
        #[source]
        source: federator_core::Error,
    },
    /// The pending CSR in the agent Secret cannot be read.
    #[error("the pending CSR is unreadable ({0})")]
    UnreadableCsr(#[source] federator_core::Error),
    /// The bundle is empty.
    #[error("spec.bundle is empty: root-cert.pem would trust nothing")]
    EmptyBundle,
    /// The installed key and chain cannot be assembled into `cacerts`.
    #[error("{0}")]
    Material(#[source] federator_core::Error),
    /// The installed chain holds no certificate.
    #[error("the installed chain is empty")]
    EmptyChain,
    /// The material would not pass istiod's load checks.
    #[error("the installed cluster CA and spec.bundle do not make valid cacerts ({0})")]
    InvalidCacerts(String),
    /// The hub's chain for the pending CSR was refused.
    #[error("the hub's signed chain for CSR generation {generation} is not acceptable: {reason}")]
    ChainRefused {
        /// The CSR generation it answered.
        generation: i64,
        /// Why.
        #[source]
        reason: ChainRefusal,
    },
    /// The installed cluster CA carries the trust-domain name constraint and the cluster
    /// runs ztunnel.
    #[error(
        "the installed cluster CA carries a URI name constraint (only identities of {0}) and this cluster runs ztunnel ({ZTUNNEL}), whose rustls-webpki rejects every certificate below such a CA: ambient workloads cannot connect; {CONSTRAINT_REMEDY}"
    )]
    InstalledConstrainedWithZtunnel(TrustDomain),
    /// The mesh config cannot be merged.
    #[error(transparent)]
    Mesh(#[from] MeshProblem),
}

/// The DaemonSet whose presence means ambient mode (Istio's ztunnel chart installs it under
/// this name in `istio-system`).
pub const ZTUNNEL: &str = "DaemonSet istio-system/ztunnel";

/// What to do when the trust-domain name constraint meets ztunnel.
const CONSTRAINT_REMEDY: &str = "set spec.constrainToTrustDomain to false in the hub's Federation (every member's cluster CA is then re-issued without it), or run this cluster's mesh without ztunnel";

/// Why a signed chain is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainRefusal {
    /// It, or the pending CSR or key, cannot be read.
    #[error("{0}")]
    Unreadable(#[source] federator_core::Error),
    /// It holds no certificate.
    #[error("spec.signed.chainPem holds no certificate")]
    Empty,
    /// The cluster CA does not have the policy's shape.
    #[error("{}", policy_reason(.0))]
    Policy(#[source] federator_core::Error),
    /// The cluster CA is not for the pending key.
    #[error("the cluster CA does not match the pending key")]
    KeyMismatch,
    /// The bundle has no root of the cluster's trust domain.
    #[error("spec.bundle has no root for this cluster's trust domain {0}")]
    NoRoot(TrustDomain),
    /// It carries the trust-domain name constraint and the cluster runs ztunnel.
    #[error(
        "it carries a URI name constraint (only identities of {0}) and this cluster runs ztunnel ({ZTUNNEL}), whose rustls-webpki rejects every certificate below such a CA; keeping the installed cluster CA: {CONSTRAINT_REMEDY}"
    )]
    ConstrainedWithZtunnel(TrustDomain),
    /// It does not lead to a root of the cluster's trust domain.
    #[error("it does not lead to a root of {trust_domain}: {source}")]
    NoPath {
        /// The cluster's trust domain.
        trust_domain: TrustDomain,
        /// The chain check's error.
        #[source]
        source: federator_core::Error,
    },
}

/// The policy check's message without its generic prefix (the refusal already says so).
fn policy_reason(e: &federator_core::Error) -> String {
    let s = e.to_string();
    s.strip_prefix("the signed cluster CA is not acceptable: ")
        .map(str::to_owned)
        .unwrap_or(s)
}

/// Why the mesh config cannot be merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshProblem {
    /// It is not YAML.
    #[error("the mesh config (ConfigMap istio-system/istio, key mesh) is not valid YAML: {0}")]
    Yaml(#[source] serde_yaml::Error),
    /// It is not a mapping.
    #[error("the mesh config (ConfigMap istio-system/istio, key mesh) is not a YAML mapping")]
    NotAMapping,
    /// Its `trustDomain` is not a string.
    #[error("the mesh config's trustDomain is not a string")]
    TrustDomain,
    /// Its `caCertificates` is not a list.
    #[error("the mesh config's caCertificates is not a list")]
    CaCertificates,
    /// It cannot be written back.
    #[error("cannot write the mesh config: {0}")]
    Write(#[source] serde_yaml::Error),
}
