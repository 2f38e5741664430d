//! Resources in the hub cluster (namespace `federator-system`).

// kube-derive takes one `printcolumn(...)` per column; clippy reads their keys as duplicates.
#![allow(clippy::duplicated_attributes)]

use federator_core::istiod::IstiodVersion;
use federator_core::key::KeyAlgorithm;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::GoDuration;
use crate::fields::{
    conditions_schema, empty_as_none, istiod_version_schema, key_algorithm_schema, time_schema,
};

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
    pub cluster_ca_ttl: GoDuration,
    /// Renew a cluster CA when this percentage of its lifetime has passed (1-99).
    #[schemars(range(min = 1, max = 99))]
    pub renew_at_percent: u8,
    /// Key algorithm agents use for cluster CA keys (`ecdsa-p256`, `ecdsa-p384`, `rsa-2048`...).
    #[schemars(schema_with = "key_algorithm_schema")]
    pub key_algorithm: KeyAlgorithm,
    /// How the `local` backend makes roots (for new trust domains and rotations).
    #[serde(default)]
    pub local_roots: LocalRootSettings,
    /// Bind every cluster CA to its own trust domain with a URI name constraint (permitted:
    /// the trust domain), so that a member's CA cannot sign another trust domain's identities
    /// that Envoy or Go verifiers accept. Sidecar meshes only: ztunnel (ambient) rejects every
    /// certificate below such a CA. Not with the `vault` backend. Changing it re-issues every
    /// member's cluster CA.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub constrain_to_trust_domain: bool,
}

/// How the `local` backend makes roots. Absent (or, as older objects wrote them, empty)
/// fields mean the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRootSettings {
    /// Key algorithm (`ecdsa-p256` by default).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "key_algorithm_schema")]
    pub key_algorithm: Option<KeyAlgorithm>,
    /// Lifetime as a Go duration (`87600h` by default).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub ttl: Option<GoDuration>,
    /// Organization (O) of the subject (`federator` by default).
    #[serde(default)]
    pub organization: String,
}

/// Where the roots live and who signs cluster CAs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RootType {
    /// A root per trust domain, generated and kept in a hub Secret.
    #[default]
    Local,
    /// One existing CA, kept in a hub Secret, for every trust domain.
    Import,
    /// Vault / OpenBao PKI; the key never leaves it.
    Vault,
}

impl RootType {
    /// The spelling in the Federation spec and the roots Secret's annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            RootType::Local => "local",
            RootType::Import => "import",
            RootType::Vault => "vault",
        }
    }

    /// Reads the spelling of [`RootType::as_str`].
    pub fn parse(s: &str) -> Option<RootType> {
        [RootType::Local, RootType::Import, RootType::Vault]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for RootType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The root backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RootBackend {
    /// `local` (a root per trust domain, generated and kept in a hub Secret), `import` (one
    /// existing CA kept in a hub Secret) or `vault` (Vault/OpenBao PKI; the key never leaves it).
    #[serde(rename = "type")]
    pub type_: RootType,
    /// Vault settings when `type` is `vault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultBackend>,
}

/// Vault / OpenBao settings. Secrets are never stored here: only references to them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    pub auth: VaultAuthMethod,
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

/// How the hub logs in to Vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VaultAuthMethod {
    /// A token, kept in the roots Secret.
    Token,
    /// AppRole: role ID and secret ID, kept in the roots Secret.
    AppRole,
    /// Kubernetes auth with the hub's ServiceAccount JWT.
    Kubernetes,
}

impl std::fmt::Display for VaultAuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VaultAuthMethod::Token => "token",
            VaultAuthMethod::AppRole => "approle",
            VaultAuthMethod::Kubernetes => "kubernetes",
        })
    }
}

/// Federation status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FederationStatus {
    /// Conditions: `Ready`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
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
    /// The federation's own roots per trust domain (canonical PEM): what its SPIFFE bundle
    /// endpoint publishes, on every replica.
    #[serde(default)]
    pub published: Vec<crate::member::BundleEntry>,
}

/// The phase of a root rotation. A rotation moves forward only, one phase at a time, and
/// the old root leaves the bundle after the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RotationPhase {
    /// Every member must install the bundle holding both roots.
    TrustingNewRoot,
    /// The trust domain's members move to the new root.
    ReSigning,
    /// Workload certificates issued under the old root expire.
    Draining,
}

impl std::fmt::Display for RotationPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RotationPhase::TrustingNewRoot => "trusting-new-root",
            RotationPhase::ReSigning => "re-signing",
            RotationPhase::Draining => "draining",
        })
    }
}

/// A root rotation in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Trust domain.
    pub trust_domain: String,
    /// `trusting-new-root` (every member must install the bundle with both roots),
    /// `re-signing` (members move to the new root), `draining` (old workload certificates
    /// expire), then the old root is removed.
    pub phase: RotationPhase,
    /// SHA-256 of the root being retired.
    pub previous_sha256: String,
    /// SHA-256 of the new root.
    pub sha256: String,
    /// When the old root will be removed, once draining.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "time_schema")]
    pub removes_old_root_at: Option<Time>,
    /// When the rotation entered its current phase (the hub sets it whenever the phase
    /// changes; absent in what hubs before it wrote).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "time_schema")]
    pub phase_since: Option<Time>,
    /// The members the current phase waits for, each with why (e.g. an istiod that has not
    /// published the bundle with both roots yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<RotationWait>,
    /// Whether the rotation was aborted (`federator rotate-root --abort`): it runs back, the
    /// members return to the original root (`sha256`), and the abandoned one
    /// (`previousSha256`) leaves after the drain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aborted: bool,
}

/// A member a rotation phase waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationWait {
    /// The `MemberCluster`.
    pub member: String,
    /// What it has not done yet.
    pub reason: WaitReason,
    /// Why, in a sentence (for `istiod-behind`, the istiod version and what the agent did).
    pub message: String,
}

/// What a member has not done yet that a rotation phase needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WaitReason {
    /// `trusting-new-root`: its `cacerts` does not hold the bundle with both roots yet.
    BundleBehind,
    /// `trusting-new-root`: its `cacerts` holds the bundle, but its istiod does not publish
    /// it yet (a restart is pending, or istiod is down or ignored the change).
    IstiodBehind,
    /// `re-signing`: it does not run a cluster CA under the new root yet.
    NotOnNewRoot,
}

impl std::fmt::Display for WaitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WaitReason::BundleBehind => "bundle-behind",
            WaitReason::IstiodBehind => "istiod-behind",
            WaitReason::NotOnNewRoot => "not-on-new-root",
        })
    }
}

impl std::fmt::Display for RotationWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.member, self.reason, self.message)
    }
}

/// One root of the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RootStatus {
    /// Trust domain the root serves.
    pub trust_domain: String,
    /// SHA-256 fingerprint.
    pub sha256: String,
    /// Subject.
    pub subject: String,
    /// NotAfter.
    #[schemars(schema_with = "time_schema")]
    pub not_after: Time,
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
    /// SPIFFE trust domain of the cluster's mesh (lowercase letters, digits, `.`, `-`, `_`).
    #[schemars(regex(pattern = r"^[a-z0-9._-]+$"), length(min = 1, max = 255))]
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub agent_mode: Option<AgentMode>,
    /// Whether the member takes part in endpoint discovery: `join` installed its reader
    /// identity, and the hub distributes remote secrets to and from it (absent on members
    /// joined before remote secrets existed, or with `--remote-secrets=false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote_secrets: bool,
}

/// Where a member's agent runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AgentMode {
    /// As a Deployment in the member (installed by `federator join`).
    InCluster,
    /// Outside the member, with a kubeconfig for its ServiceAccount.
    External,
}

/// What the hub last learnt about a member.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterStatus {
    /// Conditions: `Reachable`, `Installed`, `BundleAcknowledged`, `Ready`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Serial of the installed cluster CA.
    #[serde(default)]
    pub ca_serial: String,
    /// NotAfter of the installed cluster CA.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "time_schema")]
    pub ca_not_after: Option<Time>,
    /// NotBefore of the installed cluster CA (when it was issued, backdated 5 minutes).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "time_schema")]
    pub ca_not_before: Option<Time>,
    /// SHA-256 of the root the installed cluster CA chains to.
    #[serde(default)]
    pub ca_root_sha256: String,
    /// Bundle generation the member trusts: the one in its `cacerts` and, with an istiod, the
    /// one istiod publishes (the smaller of the two).
    #[serde(default)]
    pub bundle_generation_acknowledged: i64,
    /// istiod's state as the agent reports it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub istiod: Option<crate::member::IstiodState>,
    /// The istiod version the agent read from the Deployment (absent: unknown, or no istiod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "istiod_version_schema")]
    pub istiod_version: Option<IstiodVersion>,
    /// Last time the hub reached the member.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "time_schema")]
    pub last_contact: Option<Time>,
    /// Current problems, each a sentence.
    #[serde(default)]
    pub problems: Vec<String>,
    /// Remote secrets: the peers this member's istiod discovers through them (absent when the
    /// member takes no part in discovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_secrets: Option<MemberRemoteSecrets>,
}

/// A member's remote secrets, as its agent reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberRemoteSecrets {
    /// The peer clusters istiod reads through federator's remote secrets.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Whether they are the hub's current set (the agent projected the latest peers).
    #[serde(default)]
    pub current: bool,
    /// Remote secrets not written by federator, left alone, each a sentence.
    #[serde(default)]
    pub foreign: Vec<String>,
}
