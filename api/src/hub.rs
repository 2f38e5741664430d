//! Resources in the hub cluster (namespace `federator-system`).

// kube-derive takes one `printcolumn(...)` per column; clippy reads their keys as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

/// Federation-wide settings and status. One object, named `default`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "federator.io",
    version = "v1alpha1",
    kind = "Federation",
    namespaced,
    status = "FederationStatus",
    shortname = "fed",
    derive = "PartialEq",
    derive = "Default",
    doc = "Federation-wide settings: the root backend, cluster CA lifetime and renewal point.",
    printcolumn(name = "Root", type_ = "string", json_path = ".spec.root.type"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(
        name = "Bundle",
        type_ = "integer",
        json_path = ".status.bundleGeneration"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FederationSpec {
    /// Where the roots live and who signs cluster CAs.
    pub root: RootBackend,
    /// Lifetime of each cluster CA, as a Go duration (e.g. `720h`).
    pub cluster_ca_ttl: String,
    /// Renew a cluster CA when this percentage of its lifetime has passed (1-99).
    pub renew_at_percent: u8,
    /// Key algorithm agents use for cluster CA keys (`ecdsa-p256`, `ecdsa-p384`, `rsa-2048`...).
    pub key_algorithm: String,
    /// How the `local` backend makes roots (for new trust domains and rotations).
    #[serde(default)]
    pub local_roots: LocalRootSettings,
}

/// How the `local` backend makes roots. Empty fields mean the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRootSettings {
    /// Key algorithm (`ecdsa-p256` by default).
    #[serde(default)]
    pub key_algorithm: String,
    /// Lifetime as a Go duration (`87600h` by default).
    #[serde(default)]
    pub ttl: String,
    /// Organization (O) of the subject (`federator` by default).
    #[serde(default)]
    pub organization: String,
}

/// The root backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RootBackend {
    /// `local` (a root per trust domain, generated and kept in a hub Secret), `import` (one
    /// existing CA kept in a hub Secret) or `vault` (Vault/OpenBao PKI; the key never leaves it).
    #[serde(rename = "type")]
    pub type_: String,
    /// Vault settings when `type` is `vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultBackend>,
}

/// Vault / OpenBao settings. Secrets are never stored here: only references to them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultBackend {
    /// Address, e.g. `https://vault.example:8200`.
    pub address: String,
    /// PKI mount path, e.g. `pki`.
    pub mount: String,
    /// Issuer reference for issuer-scoped signing (empty: the mount's default issuer).
    #[serde(default)]
    pub issuer: String,
    /// Vault Enterprise namespace.
    #[serde(default)]
    pub namespace: String,
    /// `token`, `approle` or `kubernetes`.
    pub auth: String,
    /// Auth mount path (default: the auth method's name).
    #[serde(default)]
    pub auth_mount: String,
    /// Role for `approle` (role ID is in the credential Secret) or `kubernetes` auth.
    #[serde(default)]
    pub role: String,
    /// For `kubernetes` auth: the file holding the hub's ServiceAccount JWT (default: the
    /// in-cluster token path). Read at every login, so rotating tokens work.
    #[serde(default)]
    pub jwt_path: String,
    /// CA bundle (PEM) to trust for the Vault TLS endpoint.
    #[serde(default)]
    pub ca_pem: String,
}

/// Federation status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FederationStatus {
    /// Conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The roots in the bundle.
    #[serde(default)]
    pub roots: Vec<RootStatus>,
    /// A stable digest of the current trust bundle.
    #[serde(default)]
    pub bundle_digest: String,
    /// Increases every time the bundle changes.
    #[serde(default)]
    pub bundle_generation: i64,
    /// Number of member clusters.
    #[serde(default)]
    pub members: i64,
    /// Root rotations in progress.
    #[serde(default)]
    pub rotations: Vec<RotationStatus>,
}

/// A root rotation in progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Trust domain.
    pub trust_domain: String,
    /// `trusting-new-root` (every member must install the bundle with both roots),
    /// `re-signing` (members move to the new root), `draining` (old workload certificates
    /// expire), then the old root is removed.
    pub phase: String,
    /// SHA-256 of the root being retired.
    pub previous_sha256: String,
    /// SHA-256 of the new root.
    pub sha256: String,
    /// When the old root will be removed, once draining (RFC 3339).
    #[serde(default)]
    pub removes_old_root_at: String,
    /// The members the current phase waits for, each with why (e.g. an istiod that has to
    /// restart before it serves the new root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

/// One root of the bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RootStatus {
    /// Trust domain the root serves.
    pub trust_domain: String,
    /// SHA-256 fingerprint.
    pub sha256: String,
    /// Subject.
    pub subject: String,
    /// NotAfter (RFC 3339).
    pub not_after: String,
}

/// A member cluster, as the hub knows it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "federator.io",
    version = "v1alpha1",
    kind = "MemberCluster",
    namespaced,
    status = "MemberClusterStatus",
    shortname = "member",
    derive = "PartialEq",
    derive = "Default",
    doc = "A member cluster: its trust domain, network, and the hub's credential for it.",
    printcolumn(
        name = "Trust Domain",
        type_ = "string",
        json_path = ".spec.trustDomain"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "CA Serial",
        type_ = "string",
        json_path = ".status.caSerial",
        priority = 1
    ),
    printcolumn(
        name = "CA Expires",
        type_ = "string",
        json_path = ".status.caNotAfter"
    ),
    printcolumn(
        name = "Bundle",
        type_ = "integer",
        json_path = ".status.bundleGenerationAcknowledged"
    ),
    printcolumn(name = "Istiod", type_ = "string", json_path = ".status.istiod"),
    printcolumn(name = "Istio", type_ = "string", json_path = ".status.istiodVersion"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterSpec {
    /// SPIFFE trust domain of the cluster's mesh.
    pub trust_domain: String,
    /// Istio network name (informational; used for multi-network meshes).
    #[serde(default)]
    pub network: String,
    /// Hub Secret holding the least-privilege kubeconfig for this member.
    pub credential_secret: String,
    /// API server URL of the member (informational).
    #[serde(default)]
    pub server: String,
    /// `in-cluster` (the agent runs as a Deployment) or `external`.
    #[serde(default)]
    pub agent_mode: String,
}

/// What the hub last learnt about a member.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterStatus {
    /// Conditions: `Reachable`, `Issued`, `Installed`, `BundleAcknowledged`, `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Serial of the installed cluster CA.
    #[serde(default)]
    pub ca_serial: String,
    /// NotAfter of the installed cluster CA (RFC 3339).
    #[serde(default)]
    pub ca_not_after: String,
    /// SHA-256 of the root the installed cluster CA chains to.
    #[serde(default)]
    pub ca_root_sha256: String,
    /// Bundle generation the member trusts: the one in its `cacerts` and, with an istiod, the
    /// one istiod publishes (the smaller of the two).
    #[serde(default)]
    pub bundle_generation_acknowledged: i64,
    /// istiod's state as the agent reports it.
    #[serde(default)]
    pub istiod: String,
    /// The istiod version the agent read from the Deployment (empty: unknown or absent).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub istiod_version: String,
    /// Last time the hub reached the member (RFC 3339).
    #[serde(default)]
    pub last_contact: String,
    /// Current problems, each a sentence.
    #[serde(default)]
    pub problems: Vec<String>,
}
