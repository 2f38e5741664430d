//! `federator bundle`: the federation's current trust bundle, as members receive it.

use federator_api::hub::MemberCluster;
use federator_api::names;
use federator_core::bundle::TrustBundle;
use kube::Client;
use kube::api::{Api, ListParams};

use super::plan::federation::trust_domains;
use super::trust::store::RootStore;
use crate::{Error, Result};

/// The bundle for the trust domains of the current members, and its generation.
pub async fn current(hub: &Client) -> Result<(TrustBundle, i64)> {
    let fed = super::kube::federation(hub).await?;
    let members: Api<MemberCluster> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let list: Vec<std::sync::Arc<MemberCluster>> = members
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list MemberClusters", e))?
        .items
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    let tds = trust_domains(&list);
    let signer = RootStore::new(hub.clone()).load(&fed.spec).await?;
    let bundle = signer.bundle_for(tds.iter())?;
    Ok((bundle, fed.status.map(|s| s.bundle_generation).unwrap_or(0)))
}
