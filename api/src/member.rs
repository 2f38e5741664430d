//! The exchange object in each member cluster.

// kube-derive takes one `printcolumn(...)` per column; clippy reads their keys as duplicates.
#![allow(clippy::duplicated_attributes)]

use federator_core::istiod::IstiodVersion;
use federator_core::policy::IssuedCa;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::fields::{
    conditions_schema, empty_as_none, istiod_version_schema, parse_time, time_schema,
};

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
    /// Increases every time the bundle or the foreign roots change.
    #[serde(default)]
    pub bundle_generation: i64,
    /// Roots of foreign SPIFFE trust domains: for the mesh config's `caCertificates` (with
    /// `trustDomains: [<trust domain>]`) only. Those trusted mesh-wide are in `bundle` too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign: Vec<BundleEntry>,
    /// The CSR generation the hub asks for; the agent makes a fresh key and CSR when its own
    /// is older. Increased by the hub to renew.
    #[serde(default)]
    pub csr_generation: i64,
    /// Key algorithm for the cluster CA key (empty: `ecdsa-p256`). Kept as text: the agent
    /// checks it and reports an algorithm it does not know as a problem, so that a newer hub
    /// never makes the whole exchange object unreadable to an older agent.
    #[serde(default)]
    pub key_algorithm: String,
    /// The signed chain for the agent's CSR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<SignedCa>,
    /// Digest ([`crate::remote::peers_digest`]) of the peers' reader kubeconfigs the hub put
    /// into Secret `federator-system/federator-peers`; empty when this member takes no part in
    /// discovery. The agent writes a remote secret in `istio-system` for each of them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peers_digest: String,
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

/// A signed cluster CA: the hub's answer to one CSR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    /// NotAfter of the cluster CA.
    #[schemars(schema_with = "time_schema")]
    pub not_after: Time,
    /// When the hub will ask for a renewal.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "time_schema")]
    pub renew_after: Option<Time>,
}

impl SignedCa {
    /// The answer to the CSR with `csr_digest` of `generation`: the issued chain, its serial
    /// and NotAfter, and the renewal point.
    pub fn answer(
        csr_digest: &str,
        generation: i64,
        issued: &IssuedCa,
        renew_after: Option<Time>,
    ) -> Result<SignedCa, federator_core::Error> {
        let not_after = parse_time(&issued.info.not_after).ok_or_else(|| {
            federator_core::Error::Invalid(format!(
                "the issued cluster CA has an unreadable NotAfter {:?}",
                issued.info.not_after
            ))
        })?;
        Ok(SignedCa {
            csr_digest: csr_digest.to_owned(),
            generation,
            chain_pem: issued.chain_pem.clone(),
            serial: issued.info.serial.clone(),
            not_after,
            renew_after,
        })
    }
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
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Current problems, each a sentence.
    #[serde(default)]
    pub problems: Vec<String>,
    /// The remote secrets the agent keeps in `istio-system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_secrets: Option<RemoteSecretsStatus>,
}

/// The remote secrets the agent keeps, and those it found but did not write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSecretsStatus {
    /// Digest of the `federator-peers` Secret the agent last projected (empty: it is missing).
    #[serde(default)]
    pub peers_digest: String,
    /// The peer clusters istiod reads through federator's remote secrets.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Remote secrets not written by federator, left alone, each a sentence.
    #[serde(default)]
    pub foreign: Vec<String>,
}
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsrStatus {
    /// The CSR generation it answers.
    pub generation: i64,
    /// The CSR (PEM), at most as long as the hub reads: the API server refuses a longer one,
    /// so a member cannot make every watch of it carry megabytes.
    #[schemars(length(max = federator_core::csr::MAX_CSR_BYTES))]
    pub pem: String,
    /// SHA-256 of the CSR (DER), hex.
    #[schemars(length(max = 64))]
    pub digest: String,
}

/// What is installed as Istio's plug-in CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    /// Serial of the cluster CA.
    pub serial: String,
    /// SHA-256 of the cluster CA.
    pub sha256: String,
    /// NotAfter.
    #[schemars(schema_with = "time_schema")]
    pub not_after: Time,
    /// Bundle generation in `root-cert.pem`.
    pub bundle_generation: i64,
    /// CSR generation of the installed CA.
    pub csr_generation: i64,
}

/// What the agent did about istiod last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IstiodState {
    /// No istiod Deployment: nothing to restart; istiod loads `cacerts` when it starts.
    Absent,
    /// istiod picks the change up itself.
    HotReload,
    /// The agent asked for a rolling restart.
    Restarted,
}

impl std::fmt::Display for IstiodState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IstiodState::Absent => "absent",
            IstiodState::HotReload => "hot-reload",
            IstiodState::Restarted => "restarted",
        })
    }
}

/// istiod's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstiodStatus {
    /// `absent`, `hot-reload` (istiod picks the change up itself) or `restarted`.
    pub state: IstiodState,
    /// Whether istiod runs with `ISTIO_MULTIROOT_MESH=true`.
    pub multi_root: bool,
    /// The istiod version the Deployment runs (its image tag, else its
    /// `app.kubernetes.io/version` label); absent when unknown, and then the agent applies the
    /// strictest rules of every version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "istiod_version_schema")]
    pub version: Option<IstiodVersion>,
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
