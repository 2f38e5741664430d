//! The node's configuration files: containerd's `config.toml`, the kubelet's
//! `KubeletConfiguration` and the CNI network. Pure functions of [`NodeLayout`], unit-tested.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::host::NodeNetwork;

/// Where a node's files live: everything under `DIR/<cluster>/node/`.
#[derive(Debug, Clone)]
pub struct NodeLayout {
    /// `DIR/<cluster>/node`
    pub dir: PathBuf,
}

impl NodeLayout {
    /// The layout of the node whose directory is `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    /// containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.p("containerd.sock")
    }
    /// containerd's config file.
    pub fn containerd_config(&self) -> PathBuf {
        self.p("containerd.toml")
    }
    /// containerd's root (content store, snapshots).
    pub fn containerd_root(&self) -> PathBuf {
        self.p("containerd/root")
    }
    /// containerd's state (shim bundles).
    pub fn containerd_state(&self) -> PathBuf {
        self.p("containerd/state")
    }
    /// runc's state for CRI containers.
    pub fn runc_root(&self) -> PathBuf {
        self.p("runc")
    }
    /// CNI configuration directory.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.p("cni/net.d")
    }
    /// host-local IPAM state.
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.p("cni/ipam")
    }
    /// The kubelet's `--root-dir`.
    pub fn kubelet_root(&self) -> PathBuf {
        self.p("kubelet")
    }
    /// The kubelet's config file.
    pub fn kubelet_config(&self) -> PathBuf {
        self.p("kubelet.yaml")
    }
    /// Container logs (`podLogsDir`): `<namespace>_<pod>_<uid>/<container>/<restart>.log`.
    pub fn pod_logs(&self) -> PathBuf {
        self.p("pod-logs")
    }
    /// Upper layers of the overlays and the sysctl covers of the mount namespace.
    pub fn host_dir(&self) -> PathBuf {
        self.p("host")
    }
    /// Image archives made for this node (the pause image).
    pub fn images_dir(&self) -> PathBuf {
        self.p("images")
    }
}

fn toml_str(p: &Path) -> String {
    // A TOML basic string accepts JSON's escapes.
    serde_json::to_string(&p.to_string_lossy()).unwrap_or_else(|_| "\"\"".into())
}

/// containerd 1.6's `config.toml` (version 2): everything under the node's directory, CRI with
/// runc (cgroupfs), the overlayfs snapshotter, `restrict_oom_score_adj` (no CAP_SYS_RESOURCE
/// here), the given pause image, and CNI plugins from `cni_bin_dir`.
pub fn containerd_toml(layout: &NodeLayout, pause_image: &str, cni_bin_dir: &Path) -> String {
    let q = |p: PathBuf| toml_str(&p);
    let sock = layout.containerd_socket();
    let ttrpc = PathBuf::from(format!("{}.ttrpc", sock.display()));
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause}
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {runc}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
    max_conf_num = 1
"#,
        root = q(layout.containerd_root()),
        state = q(layout.containerd_state()),
        sock = toml_str(&sock),
        ttrpc = toml_str(&ttrpc),
        opt = q(layout.p("containerd/opt")),
        pause = serde_json::to_string(pause_image).unwrap_or_default(),
        runc = q(layout.runc_root()),
        cni_bin = toml_str(cni_bin_dir),
        cni_conf = q(layout.cni_conf_dir()),
    )
}

/// The CNI network of a node: a bridge (the testbed's, with the host address `.1`) and
/// host-local IPAM over `.16`–`.254`. `isGateway: false` and `ipMasq: false`: the plugin
/// changes no host setting (with `isGateway: true` it would turn on `net.ipv4.ip_forward`) and
/// writes no iptables rule; Pods reach the host's `.1` on their own link, nothing else.
pub fn cni_conflist(net: &NodeNetwork, layout: &NodeLayout) -> serde_json::Value {
    let (first, last) = net.pod_range();
    json!({
        "cniVersion": "1.0.0",
        "name": "federator-testbed",
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": false,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{
                        "subnet": net.subnet(),
                        "rangeStart": first.to_string(),
                        "rangeEnd": last.to_string(),
                    }]],
                    "dataDir": layout.cni_ipam_dir().to_string_lossy(),
                },
            },
            {"type": "loopback"},
        ],
    })
}

/// Ports of the kubelet's two listeners (both on 127.0.0.1).
#[derive(Debug, Clone, Copy)]
pub struct KubeletPorts {
    /// The kubelet API (10250's role).
    pub api: u16,
    /// `/healthz` (10248's role).
    pub healthz: u16,
}

/// The `KubeletConfiguration`:
/// * cgroup v1 accepted (`failCgroupV1: false`, this machine is cgroup v1 hybrid), the
///   `cgroupfs` driver (containerd 1.6 cannot tell the kubelet its driver), the node's own
///   cgroup subtree `cgroup_root`;
/// * no host settings touched: `makeIPTablesUtilChains: false`, `oomScoreAdj: 0`,
///   `volumePluginDir` and `podLogsDir` under the node's directory;
/// * listeners on 127.0.0.1 only, authentication by client certificate (the cluster's client
///   CA) and webhook, authorization by webhook (RBAC);
/// * no eviction and no image garbage collection (the imported images cannot be pulled
///   again);
/// * `syncFrequency`: the kubelet's default (1 min) unless given; it bounds how late a changed
///   Secret reaches a Pod's volume.
pub fn kubelet_config(
    layout: &NodeLayout,
    cgroup_root: &str,
    client_ca: &Path,
    ports: KubeletPorts,
    sync_frequency: Option<Duration>,
) -> serde_json::Value {
    let mut c = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": true,
        "cgroupRoot": format!("/{cgroup_root}"),
        "containerRuntimeEndpoint": format!("unix://{}", layout.containerd_socket().display()),
        "failSwapOn": false,
        "oomScoreAdj": 0,
        "makeIPTablesUtilChains": false,
        "podLogsDir": layout.pod_logs().to_string_lossy(),
        "volumePluginDir": layout.p("volume-plugins").to_string_lossy(),
        "address": "127.0.0.1",
        "port": ports.api,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.healthz,
        "readOnlyPort": 0,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": client_ca.to_string_lossy()},
        },
        "authorization": {"mode": "Webhook"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "0%",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
        },
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        "serializeImagePulls": false,
    });
    if let Some(d) = sync_frequency {
        c["syncFrequency"] = json!(format!("{}s", d.as_secs().max(1)));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_config_keeps_everything_in_the_node_dir() {
        let l = NodeLayout::new("/tmp/tb/c1/node");
        let t = containerd_toml(&l, "localhost/pause:x", Path::new("/usr/lib/cni"));
        assert!(
            t.contains(r#"address = "/tmp/tb/c1/node/containerd.sock""#),
            "{t}"
        );
        assert!(t.contains(r#"address = "/tmp/tb/c1/node/containerd.sock.ttrpc""#));
        assert!(t.contains(r#"root = "/tmp/tb/c1/node/containerd/root""#));
        assert!(t.contains(r#"path = "/tmp/tb/c1/node/containerd/opt""#));
        assert!(t.contains(r#"Root = "/tmp/tb/c1/node/runc""#));
        assert!(t.contains("restrict_oom_score_adj = true"));
        assert!(t.contains(r#"sandbox_image = "localhost/pause:x""#));
    }

    #[test]
    fn cni_network_changes_no_host_setting() {
        let l = NodeLayout::new("/tmp/tb/c1/node");
        let c = cni_conflist(&NodeNetwork::new(1), &l);
        let bridge = &c["plugins"][0];
        assert_eq!(bridge["bridge"], "fedtb001");
        assert_eq!(bridge["isGateway"], false);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.240.1.0/24");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["rangeStart"], "10.240.1.16");
    }

    #[test]
    fn kubelet_config_defaults_to_the_kubelet_sync_period() {
        let l = NodeLayout::new("/tmp/tb/c1/node");
        let ports = KubeletPorts { api: 1, healthz: 2 };
        let c = kubelet_config(&l, "federator-testbed-x", Path::new("/ca"), ports, None);
        assert!(c.get("syncFrequency").is_none());
        assert_eq!(c["cgroupRoot"], "/federator-testbed-x");
        assert_eq!(c["failCgroupV1"], false);
        let c = kubelet_config(
            &l,
            "x",
            Path::new("/ca"),
            ports,
            Some(Duration::from_secs(10)),
        );
        assert_eq!(c["syncFrequency"], "10s");
    }
}
