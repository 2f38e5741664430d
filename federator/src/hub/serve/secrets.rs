//! The hub's managed Secrets — the stored credentials (`federator-member-<cluster>`) and the
//! reader kubeconfigs (`federator-reader-<cluster>`) — kept in a reflector store, so that a
//! member reconcile reads them without a request (it reads fresh only before it acts on
//! what the store says: a token due, a credential replaced).
//!
//! A change of the reader kubeconfigs, whoever made it (a member controller issuing a
//! token, `join`, `leave`, another replica), bumps [`Shared::readers`] once the store holds
//! it, and every member controller then hands its agent the new set of peers.

use std::collections::BTreeMap;
use std::sync::Arc;

use federator_api::names;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

use super::Shared;
use crate::hub::member_access::{self, StoredCredential};
use crate::{Error, Result};

/// Keeps the store until the hub's watch ends; publishes it in [`Shared::managed_secrets`]
/// once the first list is in.
pub async fn run(shared: Arc<Shared>) -> Result<()> {
    let (store, writer) = reflector::store();
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), names::NAMESPACE);
    let config = watcher::Config::default().labels(&member_access::managed_selector());
    // managedFields are not needed and would be kept N times.
    let events = reflector::reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            .modify(|s| s.managed_fields_mut().clear()),
    );
    let mut events = std::pin::pin!(events);
    let mut readers: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitApply(_) | watcher::Event::Init) => continue,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "watch on the hub's managed Secrets failed; retrying with backoff");
                continue;
            }
        }
        let _ = shared.managed_secrets.set(store.clone());
        let now = member_access::reader_kubeconfigs_in(&store.state());
        if now != readers {
            readers = now;
            shared.readers.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
    Err(Error::Unreachable("the managed Secrets watch ended".into()))
}

/// The managed Secret `name` as the store holds it (`None`: no store yet, or not there).
fn cached(store: &Store<Secret>, name: &str) -> Option<Arc<Secret>> {
    store.get(&ObjectRef::new(name).within(names::NAMESPACE))
}

impl Shared {
    /// The stored credential (or reader kubeconfig) in Secret `name`: from the store when it
    /// is there and `settled` says there is nothing to do about it, else read fresh (the store
    /// may lag behind a write, and a token is never issued, nor a credential renewed or
    /// reloaded, on what only a lagging store says).
    pub async fn stored_credential(
        &self,
        name: &str,
        settled: impl Fn(&StoredCredential) -> bool,
    ) -> Result<Option<StoredCredential>> {
        if let Some(secret) = self.managed_secrets.get().and_then(|s| cached(s, name))
            && let Ok(stored) = member_access::stored_in(&secret, name)
            && settled(&stored)
        {
            return Ok(Some(stored));
        }
        member_access::stored_kubeconfig(&self.client, name).await
    }

    /// The reader kubeconfigs of the fleet: from the store, else listed.
    pub async fn reader_kubeconfigs(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        match self.managed_secrets.get() {
            Some(store) => Ok(member_access::reader_kubeconfigs_in(&store.state())),
            None => member_access::reader_kubeconfigs(&self.client).await,
        }
    }
}
