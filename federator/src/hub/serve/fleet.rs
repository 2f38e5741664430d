//! The member controllers, one task per member: started for a new member, restarted when a
//! member's spec changes (another credential, another trust domain), stopped when it leaves.
//! A task is aborted when it is dropped, so the fleet never leaks one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use federator_api::hub::{MemberCluster, MemberClusterSpec};
use kube::ResourceExt;
use tokio_util::task::AbortOnDropHandle;
use tracing::info;

use super::{Shared, member};

struct Task {
    spec: MemberClusterSpec,
    _handle: AbortOnDropHandle<()>,
}

/// The running member controllers.
#[derive(Default)]
pub struct Fleet {
    tasks: Mutex<BTreeMap<String, Task>>,
}

/// Which tasks to stop and which to start so that `running` matches `wanted`.
pub fn changes(
    running: &BTreeMap<String, MemberClusterSpec>,
    wanted: &BTreeMap<String, MemberClusterSpec>,
) -> (Vec<String>, Vec<String>) {
    let stop: Vec<String> = running
        .iter()
        .filter(|(name, spec)| wanted.get(*name) != Some(*spec))
        .map(|(name, _)| name.clone())
        .collect();
    let start = wanted
        .iter()
        .filter(|(name, spec)| running.get(*name) != Some(*spec))
        .map(|(name, _)| name.clone())
        .collect();
    (stop, start)
}

impl Fleet {
    /// Makes the running member controllers follow `members`.
    pub fn follow(&self, members: &[Arc<MemberCluster>], shared: &Arc<Shared>) {
        let wanted: BTreeMap<String, MemberClusterSpec> = members
            .iter()
            .map(|m| (m.name_any(), m.spec.clone()))
            .collect();
        shared
            .metrics
            .retain_members(&wanted.keys().cloned().collect::<Vec<_>>());
        *super::lock(&shared.members) = wanted.keys().cloned().collect();
        super::lock(&shared.status_written).retain(|name, _| wanted.contains_key(name));
        let mut tasks = super::lock(&self.tasks);
        let running: BTreeMap<String, MemberClusterSpec> = tasks
            .iter()
            .map(|(n, t)| (n.clone(), t.spec.clone()))
            .collect();
        let (stop, start) = changes(&running, &wanted);
        let departed = stop.iter().any(|n| !wanted.contains_key(n));
        for name in stop {
            info!(cluster = %name, "stopping member task");
            tasks.remove(&name);
        }
        if departed {
            // The others must stop handing out the departed member's reader credential.
            shared.readers.send_modify(|g| *g = g.wrapping_add(1));
        }
        for name in start {
            info!(cluster = %name, "starting member task");
            let spec = wanted[&name].clone();
            let handle = tokio::spawn(member::run(shared.clone(), name.clone(), spec.clone()));
            tasks.insert(
                name,
                Task {
                    spec,
                    _handle: AbortOnDropHandle::new(handle),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(td: &str) -> MemberClusterSpec {
        MemberClusterSpec {
            trust_domain: td.into(),
            ..MemberClusterSpec::default()
        }
    }

    #[test]
    fn starts_new_restarts_changed_and_stops_departed_members() {
        let running: BTreeMap<String, MemberClusterSpec> = [
            ("same".into(), spec("a")),
            ("changed".into(), spec("a")),
            ("gone".into(), spec("a")),
        ]
        .into();
        let wanted: BTreeMap<String, MemberClusterSpec> = [
            ("same".into(), spec("a")),
            ("changed".into(), spec("b")),
            ("new".into(), spec("a")),
        ]
        .into();
        let (stop, start) = changes(&running, &wanted);
        assert_eq!(stop, ["changed", "gone"]);
        assert_eq!(start, ["changed", "new"]);
        let (stop, start) = changes(&wanted, &wanted);
        assert!(stop.is_empty() && start.is_empty(), "steady state");
    }
}
