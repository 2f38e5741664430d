//! `federator bundle`: the federation's current trust bundle, as members receive it.

use federator_api::hub::MemberCluster;
use federator_api::names;
use federator_core::bundle::TrustBundle;
use federator_core::identity::TrustDomain;
use kube::Client;
use kube::api::{Api, ListParams};

use super::plan::federation::trust_domains;
use super::trust::store::RootStore;
use crate::{Error, Result};

/// The trust domains of the current members (sorted, each once).
async fn member_trust_domains(hub: &Client) -> Result<Vec<TrustDomain>> {
    let members: Api<MemberCluster> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let list: Vec<std::sync::Arc<MemberCluster>> = members
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list MemberClusters", e))?
        .items
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    Ok(trust_domains(&list))
}

/// The federation's own trust domains (its members'), without reading the roots: what a
/// foreign trust domain must differ from. Fails when the hub is not initialised.
pub async fn own_trust_domains(hub: &Client) -> Result<Vec<TrustDomain>> {
    super::kube::federation(hub).await?;
    member_trust_domains(hub).await
}

/// The bundle for the trust domains of the current members, and its generation.
pub async fn current(hub: &Client) -> Result<(TrustBundle, i64)> {
    let fed = super::kube::federation(hub).await?;
    let tds = member_trust_domains(hub).await?;
    let signer = RootStore::new(hub.clone()).load(&fed.spec).await?;
    let bundle = signer.bundle_for(tds.iter())?;
    Ok((bundle, fed.status.map(|s| s.bundle_generation).unwrap_or(0)))
}
