//! The state file (`DIR/testbed.json`) that lets `testbed status` and `testbed down` find the
//! processes of a testbed from another shell.
//!
//! It records the owning process and, for each child, its pid (= process-group id) and
//! executable. Before signalling a recorded pid, [`State::kill_all`] checks that
//! `/proc/<pid>/exe` is still that executable, so a recycled pid is never killed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process;
use crate::{Error, Result};

/// File name of the state of a testbed (written by [`crate::Testbed`]).
pub const STATE_FILE: &str = "testbed.json";
/// File name of the state of a stand-alone OpenBao (`testbed bao`), under `DIR/bao/`.
pub const BAO_STATE_FILE: &str = "bao/state.json";

/// What one owner process runs in a testbed directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The process that owns (and will clean up) the children.
    pub owner_pid: u32,
    /// The owner's executable, to recognise it later.
    pub owner_exe: Option<PathBuf>,
    /// True once everything answered its readiness check.
    pub ready: bool,
    /// etcd client URL, if etcd runs.
    pub etcd_url: Option<String>,
    /// The clusters.
    pub clusters: Vec<ClusterInfo>,
    /// OpenBao, if it runs.
    pub bao: Option<BaoInfo>,
    /// Every child process.
    pub processes: Vec<ProcessInfo>,
    /// The nodes, recorded before anything of them is made (see [`crate::node`]).
    #[serde(default)]
    pub nodes: Vec<crate::node::NodeInfo>,
}

/// A cluster as recorded in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster name.
    pub name: String,
    /// `https://127.0.0.1:<port>`
    pub server: String,
    /// Admin kubeconfig path.
    pub kubeconfig: PathBuf,
    /// For every cluster with a node (by name): the URL at which Pods on that node, and the
    /// host, reach this apiserver ([`crate::Cluster::server_from`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub servers_from: std::collections::BTreeMap<String, String>,
}

/// OpenBao as recorded in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaoInfo {
    /// `http://127.0.0.1:<port>`
    pub addr: String,
    /// File holding the root token (0600).
    pub token_file: PathBuf,
}

/// A child process as recorded in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// e.g. `cluster-1/kube-apiserver`
    pub name: String,
    /// pid, also its process-group id
    pub pid: u32,
    /// The executable (symlinks resolved), to recognise the process later.
    pub exe: PathBuf,
}

impl ProcessInfo {
    /// Whether this very process still runs (pid alive and same executable).
    pub fn is_alive(&self) -> bool {
        process::pid_alive(self.pid)
            && process::pid_exe(self.pid).as_deref() == Some(self.exe.as_path())
    }
}

impl State {
    /// Reads `dir/<file>`; `Ok(None)` if it does not exist.
    pub fn read(dir: &Path, file: &str) -> Result<Option<State>> {
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                action: "read",
                path,
                source: e,
            }),
        }
    }

    /// Writes `dir/<file>` atomically (write to a temporary file, then rename).
    pub fn write(&self, dir: &Path, file: &str) -> Result<()> {
        let path = dir.join(file);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .map_err(Error::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("rename", &path))
    }

    /// Whether the owner process is alive (same pid and, if recorded, same executable).
    pub fn owner_alive(&self) -> bool {
        process::pid_alive(self.owner_pid)
            && match &self.owner_exe {
                Some(exe) => process::pid_exe(self.owner_pid).as_deref() == Some(exe.as_path()),
                None => true,
            }
    }

    /// A new state owned by this process.
    pub fn owned_by_me() -> Self {
        let owner_pid = std::process::id();
        State {
            owner_pid,
            owner_exe: process::pid_exe(owner_pid),
            ..State::default()
        }
    }

    /// Kills every recorded child that still runs (SIGTERM, SIGKILL after `grace`), checking
    /// first that the pid still belongs to the recorded executable, then removes what the
    /// nodes left on the machine ([`crate::node::cleanup_leftovers`]: their Pods' processes,
    /// containerd shims, cgroups, bridges). Returns the names killed or cleaned.
    pub async fn kill_all(&self, grace: Duration) -> Vec<String> {
        let mut killed = Vec::new();
        // Reverse start order: node processes and apiservers before etcd.
        for p in self.processes.iter().rev() {
            if p.is_alive() {
                process::kill_group(p.pid, grace).await;
                killed.push(p.name.clone());
            }
        }
        for n in &self.nodes {
            let found = crate::node::leftovers(n);
            if !found.is_empty() {
                let problems = crate::node::cleanup_leftovers(n);
                for p in &problems {
                    tracing::warn!(node = %n.cluster, problem = %p, "node clean-up");
                }
                killed.push(format!("{} node ({})", n.cluster, found.join(", ")));
            }
        }
        killed
    }
}

/// Record for a running process.
pub(crate) fn record(name: &str, pid: u32, program: &Path) -> ProcessInfo {
    ProcessInfo {
        name: name.to_owned(),
        pid,
        exe: std::fs::canonicalize(program).unwrap_or_else(|_| program.to_owned()),
    }
}
