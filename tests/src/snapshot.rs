//! What clusters store, as resourceVersions: the proof that a refused command (or a reconciler
//! at rest) wrote nothing. A [`Snapshot`] lists every object of every listable resource of each
//! cluster, except Events and Leases (the API server renews its own Lease every 10 s, the
//! hub's leader its Lease: liveness, not state).

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::discovery::{Discovery, verbs};

/// Every listable resource of a cluster (its preferred version).
pub async fn listable(client: &kube::Client) -> Result<Vec<ApiResource>, String> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| format!("API discovery: {e}"))?;
    Ok(discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .filter(|(_, caps)| caps.supports_operation(verbs::LIST))
        .map(|(ar, _)| ar)
        .collect())
}

/// Every object of `ar` in the cluster; `None` when the resource cannot be listed there (an
/// aggregated API whose server is gone, a kind not listable cluster-wide): nothing stored.
pub async fn list_all(
    client: &kube::Client,
    ar: &ApiResource,
) -> Result<Option<Vec<DynamicObject>>, String> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(Some(l.items)),
        Err(kube::Error::Api(e)) if [404, 405, 503].contains(&e.code) => Ok(None),
        Err(e) => Err(format!("list {}: {e}", ar.plural)),
    }
}

/// Lists the same resources of the same clusters each time.
pub struct Snapshotter {
    clusters: Vec<(String, kube::Client, Vec<ApiResource>)>,
}

/// resourceVersions by `<cluster> <kind>.<group> <namespace>/<name>`.
pub type Snapshot = BTreeMap<String, String>;

impl Snapshotter {
    /// Discovers what each cluster can list (`(name, client)`).
    pub async fn new(clusters: Vec<(String, kube::Client)>) -> Self {
        let mut out = Vec::new();
        for (name, client) in clusters {
            let resources = listable(&client)
                .await
                .unwrap()
                .into_iter()
                .filter(|ar| !matches!(ar.kind.as_str(), "Event" | "Lease"))
                .collect();
            out.push((name, client, resources));
        }
        Snapshotter { clusters: out }
    }

    /// The resourceVersion of every object now.
    pub async fn take(&self) -> Snapshot {
        let mut out = BTreeMap::new();
        for (cluster, client, resources) in &self.clusters {
            for ar in resources {
                for o in list_all(client, ar).await.unwrap().into_iter().flatten() {
                    let key = format!(
                        "{cluster} {}.{} {}/{}",
                        ar.kind,
                        ar.group,
                        o.metadata.namespace.clone().unwrap_or_default(),
                        o.metadata.name.clone().unwrap_or_default()
                    );
                    out.insert(key, o.metadata.resource_version.unwrap_or_default());
                }
            }
        }
        out
    }
}

/// What differs between two snapshots: changed, added and removed objects.
pub fn changes(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = before
        .iter()
        .filter_map(|(k, v)| match after.get(k) {
            Some(w) if w == v => None,
            Some(_) => Some(format!("changed {k}")),
            None => Some(format!("removed {k}")),
        })
        .collect();
    out.extend(
        after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .map(|k| format!("added {k}")),
    );
    out
}
