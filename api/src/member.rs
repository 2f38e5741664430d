//! The exchange object in each member cluster.

// kube-derive takes one `printcolumn(...)` per column; clippy reads their keys as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

/// The single exchange object (`federator-system/local`) between the hub and the agent.
/// The hub writes `spec`; the agent writes `status`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "federator.io",
    version = "v1alpha1",
    kind = "ClusterTrust",
    namespaced,
    status = "ClusterTrustStatus",
    shortname = "ctrust",
    derive = "PartialEq",
    derive = "Default",
    doc = "The exchange between the federator hub (spec) and this cluster's agent (status).",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(
        name = "Trust Domain",
        type_ = "string",
        json_path = ".spec.trustDomain"
    ),
    printcolumn(
        name = "Installed Serial",
        type_ = "string",
        json_path = ".status.installed.serial",
        priority = 1
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.installed.notAfter"
    ),
    printcolumn(
        name = "Bundle",
        type_ = "integer",
        json_path = ".status.installed.bundleGeneration"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTrustSpec {
    /// This cluster's name in the federation.
    pub cluster_name: String,
    /// This cluster's trust domain.
    pub trust_domain: String,
    /// The trust bundle: roots per trust domain.
    #[serde(default)]
    pub bundle: Vec<BundleEntry>,
    /// Increases every time the bundle changes.
    #[serde(default)]
    pub bundle_generation: i64,
    /// The CSR generation the hub asks for; the agent makes a fresh key and CSR when its own
    /// is older. Increased by the hub to renew.
    #[serde(default)]
    pub csr_generation: i64,
    /// Key algorithm for the cluster CA key.
    #[serde(default)]
    pub key_algorithm: String,
    /// The signed chain for the agent's CSR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<SignedCa>,
}

/// The roots of one trust domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    /// Trust domain.
    pub trust_domain: String,
    /// Its roots, canonical PEM.
    pub roots_pem: String,
}

/// A signed cluster CA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedCa {
    /// SHA-256 of the CSR (DER) this answers.
    pub csr_digest: String,
    /// The CSR generation it answers.
    pub generation: i64,
    /// The cluster CA, then every certificate up to the root (PEM).
    pub chain_pem: String,
    /// Serial of the cluster CA.
    pub serial: String,
    /// NotAfter of the cluster CA (RFC 3339).
    pub not_after: String,
    /// When the hub will ask for a renewal (RFC 3339).
    #[serde(default)]
    pub renew_after: String,
}

/// What the agent reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTrustStatus {
    /// The current CSR (public key only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<CsrStatus>,
    /// What is installed in `istio-system/cacerts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<Installed>,
    /// istiod's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istiod: Option<IstiodStatus>,
    /// Conditions: `Installed`, `BundleInstalled`, `MeshConfig`, `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Current problems, each a sentence.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// The agent's current CSR.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsrStatus {
    /// The CSR generation it answers.
    pub generation: i64,
    /// The CSR (PEM).
    pub pem: String,
    /// SHA-256 of the CSR (DER).
    pub digest: String,
}

/// What is installed as Istio's plug-in CA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    /// Serial of the cluster CA.
    pub serial: String,
    /// SHA-256 of the cluster CA.
    pub sha256: String,
    /// NotAfter (RFC 3339).
    pub not_after: String,
    /// Bundle generation in `root-cert.pem`.
    pub bundle_generation: i64,
    /// CSR generation of the installed CA.
    pub csr_generation: i64,
}

/// istiod's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstiodStatus {
    /// `absent`, `hot-reload` (istiod picks the change up itself) or `restarted`.
    pub state: String,
    /// Whether istiod runs with `ISTIO_MULTIROOT_MESH=true`.
    pub multi_root: bool,
    /// The istiod version the Deployment runs (its image tag, else its
    /// `app.kubernetes.io/version` label); empty when unknown, and then the agent applies the
    /// strictest rules of every version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The bundle generation istiod was last seen publishing: its `istio-ca-root-cert`
    /// ConfigMap in `istio-system` held exactly the roots of `spec.bundle` of that generation
    /// (0: not yet). Absent without an istiod Deployment. The hub counts a member's bundle as
    /// acknowledged only up to this generation, so a rotation waits for an istiod that still
    /// has to restart (or silently ignored a change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_bundle_generation: Option<i64>,
    /// What happened last, in a sentence.
    #[serde(default)]
    pub message: String,
    /// Risks of this istiod version with the installed material, each a sentence (not
    /// problems: nothing is broken yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
