//! Named crash points between writes, for the fault-injection suite
//! (`tests/tests/failpoints.rs`, docs/security.md "Crash points").
//!
//! [`failpoint!`](crate::failpoint!) marks a point between two writes of join, signing,
//! install, renewal, the bundle fan-out, rotation and leave. In a binary built with its
//! crate's `failpoints` feature (the workspace's test build turns it on; `cargo build -p
//! federator`, the release build and the images do not), the process SIGKILLs itself at the
//! first point it reaches that the environment variable [`ENV`] names: the same as `kill -9`
//! at that instant, with no destructor, flush or graceful shutdown. Without the feature the
//! macro expands to nothing.
//!
//! Every point is listed in [`POINTS`]; a unit test checks that the sources mark exactly
//! those.

use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const ENV: &str = "FEDERATOR_FAILPOINT";

/// A crash point: its name and what has been written when it is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// The name [`ENV`] takes.
    pub name: &'static str,
    /// Where it is: what is written, what is not yet.
    pub between: &'static str,
}

const fn point(name: &'static str, between: &'static str) -> Point {
    Point { name, between }
}

/// Every crash point, by process and in the order a flow reaches them.
pub const POINTS: &[Point] = &[
    // `federator join cluster` (the CLI).
    point(
        "join.after-roots",
        "the trust domain's root exists in the roots Secret; nothing is installed in the member",
    ),
    point(
        "join.after-member-objects",
        "the CRD, namespaces, ServiceAccounts and Roles are in the member; no ClusterTrust yet",
    ),
    point(
        "join.after-cluster-trust",
        "the member's ClusterTrust exists; the hub holds no credential for it",
    ),
    point(
        "join.after-credential",
        "the hub's credential Secret is stored; no MemberCluster yet",
    ),
    point(
        "join.after-member-cluster",
        "the MemberCluster is registered; the agent's kubeconfig is not written",
    ),
    // `federator serve`, a member's controller.
    point(
        "hub.after-sign",
        "a CSR is signed (the signer issued the certificate); the ClusterTrust spec does not carry it yet",
    ),
    point(
        "hub.after-spec-write",
        "a ClusterTrust spec (signed CA, bundle, renewal or peers digest) is written; the hub's status is not updated",
    ),
    point(
        "hub.after-reader-token",
        "a new reader token is stored on the hub; the members' peers Secrets do not carry it yet",
    ),
    point(
        "hub.after-peers",
        "a member's peers Secret is written; its ClusterTrust spec does not vouch for it yet (peersDigest)",
    ),
    point(
        "hub.after-credential-renewal",
        "the hub's renewed token for a member is stored; its status and events are not written",
    ),
    point(
        "hub.after-member-status",
        "a MemberCluster status is written; its events are not published",
    ),
    // `federator serve`, the federation controller.
    point(
        "hub.after-record-resigned",
        "a rotation is recorded as re-signed (draining) in the roots Secret; the Federation status does not say so",
    ),
    point(
        "hub.after-record-finished",
        "a rotation is recorded as finished (the old root removed from the roots Secret); the Federation status and the members' bundles still hold it",
    ),
    point(
        "hub.after-federation-status",
        "the Federation status is written; the member controllers have not been given the new desired state",
    ),
    // The cluster agent.
    point(
        "agent.after-pending-key",
        "a fresh key and CSR are in the agent Secret; status.csr does not show the CSR",
    ),
    point(
        "agent.after-promote",
        "the signed chain is promoted in the agent Secret; cacerts is not written",
    ),
    point(
        "agent.after-cacerts",
        "istio-system/cacerts is written; the mesh config, remote secrets and status are not",
    ),
    point(
        "agent.after-mesh-config",
        "the mesh config is merged; remote secrets and status are not written",
    ),
    point(
        "agent.after-remote-secret",
        "one remote secret is written in istio-system; the others and the status are not",
    ),
    point(
        "agent.after-status",
        "the ClusterTrust status is written; its events are not published",
    ),
    // `federator leave cluster` (the CLI).
    point(
        "leave.after-member-objects",
        "everything join installed in the member is removed; the MemberCluster and credentials are still on the hub",
    ),
    point(
        "leave.after-member-cluster",
        "the MemberCluster is deleted; the hub's credential and reader Secrets are not",
    ),
];

/// Crashes the process (SIGKILL) when [`ENV`] names `name`. Called by
/// [`failpoint!`](crate::failpoint!) in builds with the `failpoints` feature.
pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    debug_assert!(
        POINTS.iter().any(|p| p.name == name),
        "failpoint {name} is not in POINTS"
    );
    if ARMED.get_or_init(|| std::env::var(ENV).ok()).as_deref() == Some(name) {
        eprintln!("failpoint {name}: SIGKILL");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// Marks a crash point ([`POINTS`]): in a crate built with its `failpoints` feature, calls
/// [`hit`]; otherwise nothing.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The points the hub's and the agent's sources mark, read from the files.
    fn marked() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = Vec::new();
        let mut dirs = vec![root.join("federator/src"), root.join("cluster-agent/src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for part in text.split("failpoint!(\"").skip(1) {
                        found.push(part.split('"').next().unwrap().to_owned());
                    }
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn the_sources_mark_each_listed_point_exactly_once() {
        let mut listed: Vec<String> = POINTS.iter().map(|p| p.name.to_owned()).collect();
        listed.sort();
        let before = listed.len();
        listed.dedup();
        assert_eq!(before, listed.len(), "a point is listed twice");
        assert_eq!(marked(), listed);
        assert!(POINTS.len() >= 20);
    }
}
