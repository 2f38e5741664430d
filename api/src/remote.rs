//! Istio remote secrets: how istiod learns to read another cluster's API server for endpoint
//! discovery (multi-primary), and which of them a member should hold.
//!
//! istiod watches Secrets in its own namespace labelled `istio/multiCluster: "true"`; every data
//! key of such a Secret is a cluster ID and its value a kubeconfig for that cluster
//! (`pkg/kube/multicluster/secretcontroller.go`). A cluster ID already registered by another
//! Secret is ignored ("cluster has already been registered"), and a changed kubeconfig is
//! swapped in only once the new client has synced, so a renewed token causes no gap.
//! [`remote_secret`] writes exactly what `istioctl create-remote-secret` writes
//! (`istioctl/pkg/multicluster/remote_secret.go`): the name `istio-remote-secret-<cluster>`,
//! the label, the annotation `networking.istio.io/cluster: <cluster>` and the kubeconfig under
//! the key `<cluster>` — plus federator's managed-by label, which is how the agent tells its
//! own remote secrets from ones written by someone else.
//!
//! [`plan`] is the agent's decision, free of I/O: from the peers' kubeconfigs the hub handed
//! it and the remote secrets the cluster holds, what to create, update and delete, and which
//! remote secrets not written by federator it leaves alone and reports.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;

use crate::{names, plumbing};

/// The label istiod selects remote secrets by.
pub const MULTI_CLUSTER_LABEL: (&str, &str) = ("istio/multiCluster", "true");
/// The annotation `istioctl create-remote-secret` names the cluster with.
pub const CLUSTER_ANNOTATION: &str = "networking.istio.io/cluster";
/// Prefix of a remote secret's name (`istioctl`'s).
pub const SECRET_PREFIX: &str = "istio-remote-secret-";

/// The name of the remote secret for `cluster`.
pub fn secret_name(cluster: &str) -> String {
    format!("{SECRET_PREFIX}{cluster}")
}

/// The remote secret through which istiod reads `cluster` with `kubeconfig`.
pub fn remote_secret(cluster: &str, kubeconfig: &[u8]) -> Secret {
    let mut metadata = plumbing::metadata(&secret_name(cluster), names::ISTIO_NAMESPACE);
    metadata.labels.get_or_insert_with(BTreeMap::new).insert(
        MULTI_CLUSTER_LABEL.0.to_owned(),
        MULTI_CLUSTER_LABEL.1.to_owned(),
    );
    metadata.annotations = Some([(CLUSTER_ANNOTATION.to_owned(), cluster.to_owned())].into());
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(plumbing::byte_strings(
            [(cluster.to_owned(), kubeconfig.to_vec())].into(),
        )),
        ..Secret::default()
    }
}

/// The digest of a set of peers' kubeconfigs (cluster name → kubeconfig), as the hub records it
/// in `ClusterTrust` `spec.peersDigest` and the agent reports what it projected.
pub fn peers_digest(peers: &BTreeMap<String, Vec<u8>>) -> String {
    let mut bytes = Vec::new();
    for (cluster, kubeconfig) in peers {
        for part in [cluster.as_bytes(), kubeconfig.as_slice()] {
            bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
            bytes.extend_from_slice(part);
        }
    }
    federator_core::cert::fingerprint(&bytes)
}

/// Whether federator wrote this Secret (it carries the managed-by label).
pub fn is_ours(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::MANAGED_BY_LABEL.0))
        .is_some_and(|v| v == names::MANAGED_BY_LABEL.1)
}

/// Whether istiod reads this Secret as a remote secret.
pub fn is_remote_secret(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MULTI_CLUSTER_LABEL.0))
        .is_some_and(|v| v == MULTI_CLUSTER_LABEL.1)
}

/// Whether `current` already is `wanted`: same data, label and annotation (other labels and
/// annotations someone added are kept and do not count).
fn matches(current: &Secret, wanted: &Secret) -> bool {
    let has_all = |have: &Option<BTreeMap<String, String>>,
                   want: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    plumbing::secret_data(current) == plumbing::secret_data(wanted)
        && has_all(&current.metadata.labels, &wanted.metadata.labels)
        && has_all(&current.metadata.annotations, &wanted.metadata.annotations)
}

/// A remote secret federator did not write, and what it means for the federation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    /// The Secret's name (in `istio-system`).
    pub secret: String,
    /// The clusters it names.
    pub clusters: Vec<String>,
    /// The members among them: federator writes no remote secret of its own for those while
    /// this one exists (istiod would ignore the second one anyway).
    pub shadows: Vec<String>,
}

impl Foreign {
    /// A sentence for the status.
    pub fn describe(&self) -> String {
        if self.shadows.is_empty() {
            format!(
                "remote secret istio-system/{} was not written by federator (clusters {}, not members); left alone",
                self.secret,
                self.clusters.join(", ")
            )
        } else {
            format!(
                "remote secret istio-system/{} was not written by federator and holds member(s) {}: istiod discovers them with its credential, not federator's; delete it to let federator manage them",
                self.secret,
                self.shadows.join(", ")
            )
        }
    }
}

/// What the agent should do about remote secrets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Remote secrets to create.
    pub create: Vec<Secret>,
    /// Remote secrets of federator's to replace (the wanted object; the caller carries over
    /// the resourceVersion).
    pub update: Vec<Secret>,
    /// Names of federator's remote secrets to delete (their cluster left).
    pub delete: Vec<String>,
    /// Remote secrets not written by federator: left alone, reported.
    pub foreign: Vec<Foreign>,
    /// The peers istiod discovers through federator's remote secrets once the plan is done.
    pub peers: Vec<String>,
}

impl Plan {
    /// Whether the plan writes nothing.
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Plans the remote secrets of cluster `own`: `peers` maps each peer cluster to the kubeconfig
/// of its reader identity; `existing` are the Secrets of `istio-system` (any; only remote
/// secrets count).
pub fn plan(own: &str, peers: &BTreeMap<String, Vec<u8>>, existing: &[Secret]) -> Plan {
    let mut out = Plan::default();
    let remote: Vec<&Secret> = existing.iter().filter(|s| is_remote_secret(s)).collect();
    let name_of = |s: &Secret| s.metadata.name.clone().unwrap_or_default();
    let wanted: BTreeSet<&str> = peers
        .keys()
        .map(String::as_str)
        .filter(|c| *c != own)
        .collect();
    // Clusters some foreign remote secret provides.
    let mut foreign_clusters = BTreeSet::new();
    for s in remote.iter().filter(|s| !is_ours(s)) {
        let clusters: Vec<String> = plumbing::secret_data(s).into_keys().collect();
        let shadows: Vec<String> = clusters
            .iter()
            .filter(|c| wanted.contains(c.as_str()))
            .cloned()
            .collect();
        foreign_clusters.extend(shadows.iter().cloned());
        out.foreign.push(Foreign {
            secret: name_of(s),
            clusters,
            shadows,
        });
    }
    let ours: BTreeMap<String, &Secret> = remote
        .iter()
        .filter(|s| is_ours(s))
        .map(|s| (name_of(s), *s))
        .collect();
    let mut keep = BTreeSet::new();
    for cluster in &wanted {
        if foreign_clusters.contains(*cluster) {
            continue;
        }
        let name = secret_name(cluster);
        // A Secret of that name that is not a remote secret, or not ours, blocks the name.
        if let Some(other) = existing
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
            && !(is_ours(other) && is_remote_secret(other))
        {
            if !is_remote_secret(other) {
                out.foreign.push(Foreign {
                    secret: name.clone(),
                    clusters: Vec::new(),
                    shadows: vec![(*cluster).to_owned()],
                });
            }
            continue;
        }
        let secret = remote_secret(cluster, &peers[*cluster]);
        match ours.get(&name) {
            Some(current) if matches(current, &secret) => {}
            Some(_) => out.update.push(secret),
            None => out.create.push(secret),
        }
        keep.insert(name);
        out.peers.push((*cluster).to_owned());
    }
    out.delete = ours.into_keys().filter(|n| !keep.contains(n)).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(names: &[&str]) -> BTreeMap<String, Vec<u8>> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), format!("kubeconfig of {n}").into_bytes()))
            .collect()
    }

    fn foreign(name: &str, clusters: &[&str]) -> Secret {
        let mut s = remote_secret(clusters[0], b"theirs");
        s.metadata.name = Some(name.to_owned());
        s.metadata.labels = Some(
            [(
                MULTI_CLUSTER_LABEL.0.to_owned(),
                MULTI_CLUSTER_LABEL.1.to_owned(),
            )]
            .into(),
        );
        s.data = Some(plumbing::byte_strings(
            clusters
                .iter()
                .map(|c| ((*c).to_owned(), b"theirs".to_vec()))
                .collect(),
        ));
        s
    }

    /// The object `istioctl create-remote-secret --name east` writes, field by field.
    #[test]
    fn the_remote_secret_is_what_istioctl_writes() {
        let s = remote_secret("east", b"apiVersion: v1\n");
        assert_eq!(s.metadata.name.as_deref(), Some("istio-remote-secret-east"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("istio-system"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["istio/multiCluster"], "true");
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()["networking.istio.io/cluster"],
            "east"
        );
        let data = plumbing::secret_data(&s);
        assert_eq!(data.keys().collect::<Vec<_>>(), ["east"]);
        assert_eq!(data["east"], b"apiVersion: v1\n");
        assert!(is_ours(&s) && is_remote_secret(&s));
    }

    #[test]
    fn the_peers_digest_tells_sets_apart() {
        let a = peers_digest(&peers(&["b", "c"]));
        assert_eq!(a, peers_digest(&peers(&["b", "c"])));
        assert_ne!(a, peers_digest(&peers(&["b"])));
        assert_ne!(a, peers_digest(&BTreeMap::new()));
        // No ambiguity between a name and the start of a kubeconfig.
        let x: BTreeMap<String, Vec<u8>> = [("ab".to_owned(), b"c".to_vec())].into();
        let y: BTreeMap<String, Vec<u8>> = [("a".to_owned(), b"bc".to_vec())].into();
        assert_ne!(peers_digest(&x), peers_digest(&y));
    }

    #[test]
    fn creates_every_peer_but_itself_then_nothing() {
        let p = plan("a", &peers(&["a", "b", "c"]), &[]);
        let names: Vec<_> = p
            .create
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["istio-remote-secret-b", "istio-remote-secret-c"]);
        assert_eq!(p.peers, ["b", "c"]);
        // Applied, the plan is empty.
        let again = plan("a", &peers(&["a", "b", "c"]), &p.create);
        assert!(again.is_noop(), "{again:?}");
        assert_eq!(again.peers, ["b", "c"]);
    }

    #[test]
    fn repairs_edited_secrets_and_deletes_departed_ones() {
        let current = plan("a", &peers(&["b", "c"]), &[]).create;
        let mut edited = current.clone();
        edited[0].data = Some(plumbing::byte_strings(
            [("b".to_owned(), b"tampered".to_vec())].into(),
        ));
        // Labels or annotations someone added are not a difference.
        edited[1]
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("note".into(), "x".into());
        let p = plan("a", &peers(&["b", "c"]), &edited);
        assert_eq!(p.update.len(), 1);
        assert_eq!(plumbing::secret_data(&p.update[0])["b"], b"kubeconfig of b");
        assert!(p.create.is_empty() && p.delete.is_empty());
        // b leaves.
        let p = plan("a", &peers(&["c"]), &current);
        assert_eq!(p.delete, ["istio-remote-secret-b"]);
        assert!(p.create.is_empty() && p.update.is_empty());
        // A deleted one is created again.
        let p = plan("a", &peers(&["b", "c"]), &current[1..]);
        assert_eq!(p.create.len(), 1);
    }

    #[test]
    fn foreign_remote_secrets_are_left_alone_and_reported() {
        let existing = vec![
            foreign("istio-remote-secret-legacy", &["legacy"]),
            foreign("by-hand", &["c", "other"]),
        ];
        let p = plan("a", &peers(&["b", "c"]), &existing);
        // b gets ours; c is held by a Secret someone else wrote: no second one for istiod to ignore.
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.peers, ["b"]);
        assert!(
            p.delete.is_empty() && p.update.is_empty(),
            "foreign ones are never touched"
        );
        assert_eq!(p.foreign.len(), 2);
        assert_eq!(p.foreign[0].shadows, Vec::<String>::new());
        assert!(p.foreign[0].describe().contains("not members"));
        assert_eq!(p.foreign[1].shadows, ["c"]);
        assert!(p.foreign[1].describe().contains("delete it"));
        // A plain Secret (not a remote secret) with our name is not overwritten either.
        let mut plain = Secret::default();
        plain.metadata.name = Some("istio-remote-secret-b".into());
        let p = plan("a", &peers(&["b"]), &[plain]);
        assert!(p.is_noop() && p.peers.is_empty());
        assert_eq!(p.foreign[0].shadows, ["b"]);
        // Secrets that are not remote secrets do not count otherwise.
        let mut cacerts = Secret::default();
        cacerts.metadata.name = Some("cacerts".into());
        assert!(plan("a", &BTreeMap::new(), &[cacerts]).foreign.is_empty());
    }
}
