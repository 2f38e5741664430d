//! Remote secrets, the hub's half: which peers' reader kubeconfigs each member is handed, and
//! when the hub must write them. No I/O here.
//!
//! Every member that takes part in discovery has a reader identity; the hub mints short-lived
//! tokens for it (TokenRequest) and keeps the resulting kubeconfig in its own namespace
//! (`federator-reader-<cluster>`). Each member is handed the kubeconfigs of all the others
//! through its `federator-system/federator-peers` Secret, and the agent turns them into
//! Istio remote secrets ([`federator_api::remote`]).

use std::collections::{BTreeMap, BTreeSet};

use federator_api::member::ClusterTrust;
use federator_api::remote::peers_digest;

/// What the hub hands one member: the peers' kubeconfigs and their digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeersPlan {
    /// Peer cluster → kubeconfig of its reader identity.
    pub peers: BTreeMap<String, Vec<u8>>,
    /// Their digest (`spec.peersDigest`).
    pub digest: String,
    /// Whether the peers Secret must be written: the spec records another digest, or the
    /// agent reports having read another one (the Secret was edited or deleted).
    pub write: bool,
}

/// The desired remote secrets of every member: for each member of `readers` (cluster →
/// reader kubeconfig of every member that takes part in discovery), all the others.
pub fn desired(readers: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    readers
        .keys()
        .map(|member| (member.clone(), peers_of(member, readers)))
        .collect()
}

/// The peers member `member` is handed: every other member's reader kubeconfig.
pub fn peers_of(member: &str, readers: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    readers
        .iter()
        .filter(|(name, _)| name.as_str() != member)
        .map(|(name, kc)| (name.clone(), kc.clone()))
        .collect()
}

/// Plans what to hand `member`, given its `ClusterTrust` as read. Only the readers of the
/// current `members` count: the reader Secret of a cluster that left (a leave interrupted
/// before it deleted it) is no peer.
pub fn plan(
    member: &str,
    readers: &BTreeMap<String, Vec<u8>>,
    members: &BTreeSet<String>,
    ct: &ClusterTrust,
) -> PeersPlan {
    let current: BTreeMap<String, Vec<u8>> = readers
        .iter()
        .filter(|(name, _)| members.contains(*name))
        .map(|(name, kc)| (name.clone(), kc.clone()))
        .collect();
    let peers = peers_of(member, &current);
    let digest = peers_digest(&peers);
    let reported = ct
        .status
        .as_ref()
        .and_then(|s| s.remote_secrets.as_ref())
        .map(|r| r.peers_digest.as_str());
    let write = ct.spec.peers_digest != digest || reported.is_some_and(|r| r != digest);
    PeersPlan {
        peers,
        digest,
        write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_api::member::{ClusterTrustSpec, ClusterTrustStatus, RemoteSecretsStatus};

    fn all_members() -> BTreeSet<String> {
        ["a", "b", "c"].map(str::to_owned).into()
    }

    #[test]
    fn the_reader_of_a_departed_cluster_is_no_peer() {
        let r = readers(&["a", "b", "c"]);
        let ct = ClusterTrust::new("x", ClusterTrustSpec::default());
        let left_c: BTreeSet<String> = ["a", "b"].map(str::to_owned).into();
        let p = plan("a", &r, &left_c, &ct);
        assert_eq!(p.peers.keys().collect::<Vec<_>>(), ["b"]);
        assert_ne!(p.digest, plan("a", &r, &all_members(), &ct).digest);
    }

    fn readers(names: &[&str]) -> BTreeMap<String, Vec<u8>> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), format!("reader of {n}").into_bytes()))
            .collect()
    }

    #[test]
    fn every_member_gets_every_other_member() {
        let all = desired(&readers(&["a", "b", "c"]));
        assert_eq!(all.len(), 3);
        for (member, peers) in &all {
            assert!(!peers.contains_key(member));
            assert_eq!(peers.len(), 2);
        }
        assert_eq!(all["a"]["b"], b"reader of b");
        // N × (N − 1) remote secrets in all.
        assert_eq!(all.values().map(BTreeMap::len).sum::<usize>(), 6);
        // b leaves: it disappears from everyone, and gets nothing.
        let after = desired(&readers(&["a", "c"]));
        assert!(!after.contains_key("b"));
        assert!(after.values().all(|p| !p.contains_key("b")));
    }

    #[test]
    fn writes_only_when_the_spec_or_the_agent_disagree() {
        let r = readers(&["a", "b", "c"]);
        let mut ct = ClusterTrust::new("local", ClusterTrustSpec::default());
        let first = plan("a", &r, &all_members(), &ct);
        assert!(first.write);
        ct.spec.peers_digest = first.digest.clone();
        // The agent has not reported yet: nothing to repeat.
        assert!(!plan("a", &r, &all_members(), &ct).write);
        let report = |digest: &str| ClusterTrustStatus {
            remote_secrets: Some(RemoteSecretsStatus {
                peers_digest: digest.to_owned(),
                ..RemoteSecretsStatus::default()
            }),
            ..ClusterTrustStatus::default()
        };
        ct.status = Some(report(&first.digest));
        assert!(!plan("a", &r, &all_members(), &ct).write, "steady state");
        // The agent read something else (the Secret was edited or deleted): write again.
        ct.status = Some(report(""));
        assert!(plan("a", &r, &all_members(), &ct).write);
        // A renewed reader token of b changes what a is handed.
        ct.status = Some(report(&first.digest));
        let mut renewed = r.clone();
        renewed.insert("b".into(), b"new token".to_vec());
        let next = plan("a", &renewed, &all_members(), &ct);
        assert!(next.write && next.digest != first.digest);
        // a's own reader does not count for a.
        let mut own = r.clone();
        own.insert("a".into(), b"new token".to_vec());
        assert!(!plan("a", &own, &all_members(), &ct).write);
    }
}
