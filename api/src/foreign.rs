//! SPIFFE federation in the hub cluster: the foreign trust domains the federation trusts
//! ([`ForeignTrustDomain`], one object per domain).

// kube-derive takes one `printcolumn(...)` per column; clippy reads their keys as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::GoDuration;
use crate::fields::{conditions_schema, empty_as_none, time_schema};
use crate::hub::RootStatus;

/// A foreign trust domain: where to fetch its SPIFFE bundle, and what the hub last fetched.
/// Its roots go to every member: into the mesh config's `caCertificates` with
/// `trustDomains: [<trust domain>]` always, into `root-cert.pem` only with `meshWide`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "federator.io",
    version = "v1alpha1",
    kind = "ForeignTrustDomain",
    namespaced,
    status = "ForeignTrustDomainStatus",
    shortname = "ftd",
    derive = "PartialEq",
    derive = "Default",
    doc = "A foreign SPIFFE trust domain whose bundle the hub fetches and gives every member.",
    printcolumn(
        name = "Trust Domain",
        type_ = "string",
        json_path = ".spec.trustDomain"
    ),
    printcolumn(
        name = "Profile",
        type_ = "string",
        json_path = ".spec.bundleEndpoint.profile"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Sequence", type_ = "integer", json_path = ".status.sequence"),
    printcolumn(name = "Fetched", type_ = "date", json_path = ".status.lastFetched"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ForeignTrustDomainSpec {
    /// The trust domain (SPIFFE Federation §5.1: configured, never inferred from the URL).
    pub trust_domain: String,
    /// Its bundle endpoint.
    pub bundle_endpoint: BundleEndpointRef,
    /// Trust anchors (PEM CA certificates) for the first `https_spiffe` connection to a
    /// self-serving endpoint; afterwards the last fetched bundle authenticates it.
    #[serde(default)]
    pub bootstrap_pem: String,
    /// Also put the domain's roots into every member's `root-cert.pem` (mesh-wide trust: every
    /// sidecar then accepts certificates of this domain's CAs, whatever their SPIFFE ID).
    #[serde(default)]
    pub mesh_wide: bool,
}

/// A bundle endpoint (SPIFFE Federation §5.1, §5.2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleEndpointRef {
    /// The endpoint URL (`https://`, no user info).
    #[schemars(regex(pattern = r"^https://[^@/]+(/.*)?$"))]
    pub url: String,
    /// `https_web` (Web PKI) or `https_spiffe` (the server presents an X509-SVID).
    pub profile: EndpointProfile,
    /// With `https_spiffe`: the SPIFFE ID the endpoint's server must present.
    #[serde(default)]
    pub endpoint_spiffe_id: String,
}

/// A bundle endpoint profile (SPIFFE Federation §5.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EndpointProfile {
    /// Web PKI: the server certificate is checked against the system's CA certificates
    /// (`SSL_CERT_FILE`/`SSL_CERT_DIR` on Linux) and the URL's host.
    #[default]
    #[serde(rename = "https_web")]
    HttpsWeb,
    /// SPIFFE authentication: the server presents an X509-SVID for `endpointSpiffeId`.
    #[serde(rename = "https_spiffe")]
    HttpsSpiffe,
}

impl EndpointProfile {
    /// The profile's name in the specification.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointProfile::HttpsWeb => "https_web",
            EndpointProfile::HttpsSpiffe => "https_spiffe",
        }
    }
}

impl std::fmt::Display for EndpointProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the hub last learnt from a foreign bundle endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForeignTrustDomainStatus {
    /// `Ready`: the last fetch succeeded and its roots are what members get.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The X.509 roots of the last good bundle (canonical PEM): what members get. Kept when
    /// the endpoint fails.
    #[serde(default)]
    pub roots_pem: String,
    /// Those roots.
    #[serde(default)]
    pub roots: Vec<RootStatus>,
    /// JWT authorities in the last good bundle (not used by Istio).
    #[serde(default)]
    pub jwt_authorities: i64,
    /// `spiffe_sequence` of the last good bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// `spiffe_refresh_hint` of the last good bundle.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub refresh_hint: Option<GoDuration>,
    /// The last successful fetch (refreshed at most once per `serve --heartbeat` while
    /// nothing changes).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "time_schema")]
    pub last_fetched: Option<Time>,
    /// When the bundle's content last changed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "time_schema")]
    pub last_changed: Option<Time>,
    /// Whether members get roots older than the endpoint's current answer could be: the last
    /// fetch failed or was refused.
    #[serde(default)]
    pub stale: bool,
    /// Why the last fetch failed or was refused (empty when it succeeded).
    #[serde(default)]
    pub error: String,
    /// Since when fetches fail.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    #[schemars(schema_with = "time_schema")]
    pub failing_since: Option<Time>,
    /// What the last good bundle held that was skipped (unknown key uses or types).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The `metadata.generation` the status was computed for.
    #[serde(default)]
    pub observed_generation: i64,
}
