//! `federator status`: one row per member, from what `serve` recorded on the hub.

use std::time::Duration;

use federator_api::condition::{self, types};
use federator_api::fields;
use federator_api::hub::{MemberCluster, RootStatus};
use federator_api::names;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{Error, Result};

/// One member's health.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    /// Cluster name.
    pub name: String,
    /// Trust domain.
    pub trust_domain: String,
    /// Healthy or not (see `problems`).
    pub healthy: bool,
    /// Installed CA serial.
    pub ca_serial: String,
    /// Installed CA NotAfter.
    pub ca_not_after: String,
    /// Installed CA NotBefore (when it was issued, backdated 5 minutes).
    pub ca_not_before: String,
    /// The installed CA's age (since NotBefore), as a duration (`3h12m`).
    pub ca_age: String,
    /// Bundle generation the member installed.
    pub bundle_generation_acknowledged: i64,
    /// istiod state.
    pub istiod: String,
    /// istiod version (empty: unknown or absent).
    pub istiod_version: String,
    /// Last contact.
    pub last_contact: String,
    /// Remote secrets: the peers its istiod discovers, and whether they are current (`None`:
    /// the member takes no part in discovery).
    pub remote_secrets: Option<federator_api::hub::MemberRemoteSecrets>,
    /// Problems.
    pub problems: Vec<String>,
}

/// The federation's status.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Root backend.
    pub root_backend: String,
    /// Current bundle generation.
    pub bundle_generation: i64,
    /// Roots in the bundle.
    pub roots: Vec<RootStatus>,
    /// Root rotations in progress.
    pub rotations: Vec<federator_api::hub::RotationStatus>,
    /// Members.
    pub clusters: Vec<ClusterRow>,
    /// Foreign SPIFFE trust domains.
    pub foreign: Vec<ForeignRow>,
    /// Whether every member is healthy.
    pub healthy: bool,
}

/// One foreign trust domain, as `status` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForeignRow {
    /// The trust domain.
    pub trust_domain: String,
    /// Its bundle endpoint.
    pub bundle_endpoint: String,
    /// `https_web` or `https_spiffe`.
    pub profile: String,
    /// Whether its roots are also in `root-cert.pem`.
    pub mesh_wide: bool,
    /// Whether the last fetch succeeded.
    pub ready: bool,
    /// Whether members get roots older than the endpoint's current answer could be.
    pub stale: bool,
    /// The roots members get.
    pub roots: usize,
    /// `spiffe_sequence` of the last good bundle.
    pub sequence: Option<i64>,
    /// The last successful fetch.
    pub last_fetched: String,
    /// Why the last fetch failed, or the state before the first one.
    pub message: String,
}

fn foreign_row(d: &federator_api::foreign::ForeignTrustDomain) -> ForeignRow {
    let s = d.status.clone().unwrap_or_default();
    let ready = condition::is_true(&s.conditions, types::READY);
    let message = if s.conditions.is_empty() {
        "not fetched yet: is `federator serve` running?".to_owned()
    } else if ready {
        String::new()
    } else {
        s.conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default()
    };
    ForeignRow {
        trust_domain: d.spec.trust_domain.clone(),
        bundle_endpoint: d.spec.bundle_endpoint.url.clone(),
        profile: d.spec.bundle_endpoint.profile.to_string(),
        mesh_wide: d.spec.mesh_wide,
        ready,
        stale: s.stale,
        roots: s.roots.len(),
        sequence: s.sequence,
        last_fetched: s.last_fetched.map(|t| t.0.to_string()).unwrap_or_default(),
        message,
    }
}

/// Reads the federation's status. A member is unhealthy when it is not Ready, has problems,
/// runs an older bundle, or was last reached more than `stale_after` ago.
pub async fn status(hub: &Client, stale_after: Duration) -> Result<StatusReport> {
    let fed = super::kube::federation(hub).await?;
    let fstatus = fed.status.clone().unwrap_or_default();
    let members: Api<MemberCluster> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let list = members
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list MemberClusters", e))?;
    let foreign_api: Api<federator_api::foreign::ForeignTrustDomain> =
        Api::namespaced(hub.clone(), names::NAMESPACE);
    let mut foreign: Vec<ForeignRow> = match foreign_api.list(&ListParams::default()).await {
        Ok(l) => l.items.iter().map(foreign_row).collect(),
        // A hub whose CRDs predate foreign trust domains.
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(Error::kube("list ForeignTrustDomains", e)),
    };
    foreign.sort_by(|a, b| a.trust_domain.cmp(&b.trust_domain));
    let now = OffsetDateTime::now_utc();
    let clusters: Vec<ClusterRow> = list
        .items
        .iter()
        .map(|m| {
            let s = m.status.clone().unwrap_or_default();
            let mut problems = s.problems.clone();
            if s.conditions.is_empty() {
                problems.push("no status yet: is `federator serve` running?".into());
            } else if !condition::is_true(&s.conditions, types::READY) && problems.is_empty() {
                let pending: Vec<&str> = s
                    .conditions
                    .iter()
                    .filter(|c| c.status != condition::TRUE && c.type_ != types::READY)
                    .map(|c| c.type_.as_str())
                    .collect();
                problems.push(format!("not ready: {}", pending.join(", ")));
            }
            if s.bundle_generation_acknowledged < fstatus.bundle_generation
                && !s.conditions.is_empty()
            {
                let p = format!(
                    "runs bundle generation {} of {}",
                    s.bundle_generation_acknowledged, fstatus.bundle_generation
                );
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
            if let Some(t) = &s.last_contact
                && now - fields::offset(t) > stale_after
            {
                problems.push(format!(
                    "last contact {} is older than {}",
                    t.0,
                    federator_core::duration::format(stale_after)
                ));
            }
            ClusterRow {
                name: m.name_any(),
                trust_domain: m.spec.trust_domain.clone(),
                healthy: problems.is_empty(),
                ca_serial: s.ca_serial,
                ca_not_after: s.ca_not_after.map(|t| t.0.to_string()).unwrap_or_default(),
                ca_age: s
                    .ca_not_before
                    .as_ref()
                    .map(|t| age(now - fields::offset(t)))
                    .unwrap_or_default(),
                ca_not_before: s.ca_not_before.map(|t| t.0.to_string()).unwrap_or_default(),
                bundle_generation_acknowledged: s.bundle_generation_acknowledged,
                istiod: s.istiod.map(|i| i.to_string()).unwrap_or_default(),
                istiod_version: s.istiod_version.map(|v| v.to_string()).unwrap_or_default(),
                last_contact: s.last_contact.map(|t| t.0.to_string()).unwrap_or_default(),
                remote_secrets: s.remote_secrets,
                problems,
            }
        })
        .collect();
    Ok(StatusReport {
        root_backend: fed.spec.root.type_.to_string(),
        bundle_generation: fstatus.bundle_generation,
        roots: fstatus.roots,
        rotations: fstatus.rotations,
        healthy: clusters.iter().all(|c| c.healthy),
        clusters,
        foreign,
    })
}

/// An age as a short duration (whole seconds; `0s` for a clock ahead of the issuer's).
fn age(d: time::Duration) -> String {
    let secs = u64::try_from(d.whole_seconds()).unwrap_or(0);
    federator_core::duration::format(Duration::from_secs(secs))
}
