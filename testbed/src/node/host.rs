//! What a node needs from the machine, each piece created under a name unique to the testbed
//! instance and removed again: a cgroup subtree in every hierarchy, a bridge with one address,
//! and a private mount namespace. Nothing here touches a cgroup, interface, address or
//! setting the testbed did not create.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A short id for the node of cluster `cluster` in testbed directory `dir`: the same testbed
/// directory and cluster always give the same id (so a crashed owner's leftovers are found
/// again), two testbeds never share one.
pub fn node_id(dir: &Path, cluster: &str) -> String {
    let mut h = Sha256::new();
    h.update(dir.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(cluster.as_bytes());
    h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Name of the node's cgroup subtree (the kubelet's `cgroupRoot`), at the top of every
/// hierarchy.
pub fn cgroup_name(id: &str) -> String {
    format!("federator-testbed-{id}")
}

// ---------------------------------------------------------------------------------------------
// cgroups

/// The mount point of every cgroup hierarchy (v1 and v2), one per hierarchy, with whether it
/// carries the cpuset controller.
pub fn cgroup_hierarchies() -> Vec<(PathBuf, bool)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_cgroup_mounts(&text)
}

/// [`cgroup_hierarchies`] from the text of `/proc/self/mountinfo`.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<(PathBuf, bool)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (Some(dev), Some(root), Some(point), Some(fstype)) =
            (l.get(2), l.get(3), l.get(4), r.first())
        else {
            continue;
        };
        if (*fstype != "cgroup" && *fstype != "cgroup2") || *root != "/" {
            continue;
        }
        if !seen.insert((*dev).to_owned()) {
            continue;
        }
        let cpuset = *fstype == "cgroup"
            && r.get(2)
                .is_some_and(|opts| opts.split(',').any(|o| o == "cpuset"));
        out.push((PathBuf::from(unescape_mount(point)), cpuset));
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates `/<name>` in every hierarchy (the kubelet requires its `cgroupRoot` to exist in all
/// of them), copying `cpuset.cpus`/`cpuset.mems` from the hierarchy's root where cpuset is
/// attached (a v1 cpuset cgroup takes no task until they are set).
pub fn create_cgroups(name: &str) -> Result<()> {
    for (mount, cpuset) in cgroup_hierarchies() {
        let dir = mount.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create cgroup", &dir)(e)),
        }
        if cpuset {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let value = std::fs::read_to_string(mount.join(f))
                    .map_err(Error::io("read", mount.join(f)))?;
                std::fs::write(dir.join(f), value.trim())
                    .map_err(Error::io("write", dir.join(f)))?;
            }
        }
    }
    Ok(())
}

/// Every directory of the subtree `/<name>` in every hierarchy, children before parents.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        out.push(dir.to_owned());
    }
    let mut out = Vec::new();
    for (mount, _) in cgroup_hierarchies() {
        let root = mount.join(name);
        if root.is_dir() {
            walk(&root, &mut out);
        }
    }
    out
}

/// Whether any of the node's cgroups still exists.
pub fn cgroups_exist(name: &str) -> bool {
    cgroup_hierarchies()
        .iter()
        .any(|(mount, _)| mount.join(name).exists())
}

/// The processes in the subtree `/<name>` of any hierarchy (the node's Pods: pause and
/// application containers).
pub fn cgroup_pids(name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = cgroup_dirs(name)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in the node's cgroups until none is left (or `timeout`), then removes
/// the subtree, children first, in every hierarchy. Returns what could not be removed.
pub fn remove_cgroups(name: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = cgroup_pids(name);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            kill(pid, Signal::KILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut failed = Vec::new();
    loop {
        failed.clear();
        for dir in cgroup_dirs(name) {
            if let Err(e) = std::fs::remove_dir(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                failed.push(format!("{}: {e}", dir.display()));
            }
        }
        if failed.is_empty() || Instant::now() > deadline {
            return failed;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

fn kill(pid: u32, signal: Signal) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(p, signal);
    }
}

/// The command line of `pid`, split at NULs.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The containerd shims serving containerd socket `socket` (`containerd-shim-runc-v2 …
/// -address <socket>`). Shims detach from containerd (they survive it, and the testbed's
/// process groups), so they are found by their command line.
pub fn shims_of(socket: &Path) -> Vec<u32> {
    let socket = socket.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let args = cmdline(*pid);
            args.first()
                .is_some_and(|a| a.rsplit('/').next() == Some("containerd-shim-runc-v2"))
                && args
                    .windows(2)
                    .any(|w| w[0] == "-address" && w[1] == socket)
        })
        .collect()
}

/// SIGKILLs the shims of `socket` and waits (up to `timeout`) until they are gone.
pub fn kill_shims(socket: &Path, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut killed = 0;
    loop {
        let shims = shims_of(socket);
        if shims.is_empty() || Instant::now() > deadline {
            return killed;
        }
        for pid in shims {
            kill(pid, Signal::KILL);
            killed += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Network: one bridge per node, one /24 per bridge

/// The first of the /24s nodes use: `10.240.0.0/12` (4096 of them). Away from the machine's
/// own networks (eth0 is 192.0.2.0/24 here); each is checked against the routing table before
/// it is claimed.
const FIRST_NET: u32 = u32::from_be_bytes([10, 240, 0, 0]);
const NETS: u32 = 4096;

/// A node's network: bridge `fedtb<index>` with address `10.x.y.1/24`, which is also the
/// ClusterIP of the cluster's `kubernetes` Service (its service range is `10.x.y.0/28`), Pods
/// at `10.x.y.16`–`.254`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeNetwork {
    /// Which /24 of `10.240.0.0/12`.
    pub index: u32,
    /// The bridge's name.
    pub bridge: String,
}

impl NodeNetwork {
    /// The network for `index`.
    pub fn new(index: u32) -> Self {
        Self {
            index,
            bridge: format!("fedtb{index:03x}"),
        }
    }

    fn base(&self) -> u32 {
        FIRST_NET + (self.index << 8)
    }

    /// `10.x.y.0/24`
    pub fn subnet(&self) -> String {
        format!("{}/24", Ipv4Addr::from(self.base()))
    }

    /// `10.x.y.1`: the bridge's address on the host, the node's IP, and the `kubernetes`
    /// Service's ClusterIP (the testbed forwards its port 443 to the apiserver, and the other
    /// clusters' apiserver ports to them: [`crate::Cluster::server_from`]).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1)
    }

    /// The apiserver's `--service-cluster-ip-range`: `10.x.y.0/28`.
    pub fn service_cidr(&self) -> String {
        format!("{}/28", Ipv4Addr::from(self.base()))
    }

    /// First and last Pod address.
    pub fn pod_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        (
            Ipv4Addr::from(self.base() + 16),
            Ipv4Addr::from(self.base() + 254),
        )
    }

    /// The alias the bridge carries, naming its owner (checked before it is ever deleted).
    pub fn alias(id: &str) -> String {
        format!("federator-testbed node {id}")
    }
}

/// The IPv4 routes of the main table as (network, mask), default route excluded.
fn routes() -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    parse_routes(&text)
}

/// [`routes`] from the text of `/proc/net/route` (little-endian hex fields).
pub fn parse_routes(text: &str) -> Vec<(u32, u32)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            (mask != 0).then_some((dest & mask, mask))
        })
        .collect()
}

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    let m = a.1 & b.1;
    a.0 & m == b.0 & m
}

fn ip(args: &[&str]) -> std::result::Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Claims a /24 and its bridge for node `id`: starting at a place derived from `id`, the first
/// /24 that no route overlaps and whose bridge name is free. Creating the bridge is the claim
/// (two testbeds racing for one name: one `ip link add` fails and that one moves on). The
/// bridge gets the alias [`NodeNetwork::alias`], the address `.1/24`, and is set up.
pub fn claim_network(id: &str) -> Result<NodeNetwork> {
    let start = u32::from_str_radix(&id[..6.min(id.len())], 16).unwrap_or(0) % NETS;
    let taken = routes();
    for k in 0..NETS {
        let net = NodeNetwork::new((start + k) % NETS);
        if taken
            .iter()
            .any(|r| overlaps(*r, (net.base(), 0xffff_ff00)))
        {
            continue;
        }
        match ip(&["link", "add", &net.bridge, "type", "bridge"]) {
            Ok(()) => {}
            Err(e) if e.contains("File exists") => continue,
            Err(e) => {
                return Err(Error::Node(format!(
                    "cannot create bridge {}: {e} (the testbed's nodes need root)",
                    net.bridge
                )));
            }
        }
        let addr = format!("{}/24", net.gateway());
        let setup = ip(&[
            "link",
            "set",
            "dev",
            &net.bridge,
            "alias",
            &NodeNetwork::alias(id),
        ])
        .and_then(|()| ip(&["addr", "add", &addr, "dev", &net.bridge]))
        .and_then(|()| ip(&["link", "set", "dev", &net.bridge, "up"]));
        if let Err(e) = setup {
            let _ = ip(&["link", "del", &net.bridge]);
            return Err(Error::Node(format!(
                "cannot set up bridge {}: {e}",
                net.bridge
            )));
        }
        return Ok(net);
    }
    Err(Error::Node(
        "no free /24 in 10.240.0.0/12 for a node network".into(),
    ))
}

/// The TCP ports listening on `addr` in this network namespace (`/proc/net/tcp`).
pub fn listening_ports(addr: Ipv4Addr) -> Vec<u16> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    parse_listening(&text, addr)
}

/// [`listening_ports`] from the text of `/proc/net/tcp` (local address as little-endian hex
/// `ADDR:PORT`, state `0A` is LISTEN).
pub fn parse_listening(text: &str, addr: Ipv4Addr) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.swap_bytes());
            let port = u16::from_str_radix(port, 16).ok()?;
            (ip == addr && *f.get(3)? == "0A").then_some(port)
        })
        .collect()
}

/// Whether bridge `bridge` exists and carries node `id`'s alias.
pub fn bridge_is_ours(bridge: &str, id: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{bridge}/ifalias"))
        .is_ok_and(|a| a.trim() == NodeNetwork::alias(id))
}

/// Deletes the bridge if it is node `id`'s (its alias says so); anything else is left alone.
pub fn release_network(net: &NodeNetwork, id: &str) -> std::result::Result<(), String> {
    if bridge_is_ours(&net.bridge, id) {
        ip(&["link", "del", &net.bridge])
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The node's mount namespace

/// Host directories the node stack writes into regardless of its configuration (the kubelet's
/// device-plugin socket under `/var/lib/kubelet`, `/var/log/containers`, containerd's shim
/// sockets and fifos under `/run/containerd`, libcni's cache under `/var/lib/cni`, network
/// namespaces under `/run/netns`). Inside the node's mount namespace each is an overlay whose
/// upper layer is under the node's directory, so writes land there and the host's
/// directories never change.
pub const OVERLAID: [&str; 3] = ["/var/lib", "/var/log", "/run"];

/// The kernel settings the kubelet writes at start when they differ (`setupKernelTunables`),
/// host-wide otherwise. Inside the node's mount namespace each `/proc/sys` file is covered by
/// a bind-mounted regular file holding the machine's value, which the kubelet then rewrites:
/// the machine's settings stay as they are.
pub const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Refuses a directory the overlays would cover (the node's own files must stay outside
/// them) or that overlayfs options cannot name.
pub fn check_node_dir(dir: &Path) -> Result<()> {
    let s = dir.to_string_lossy();
    if s.contains([':', ',', '\n']) {
        return Err(Error::Dir(format!(
            "{s}: a testbed with nodes needs a directory whose path has no ':' or ','"
        )));
    }
    for o in OVERLAID {
        if dir.starts_with(o) {
            return Err(Error::Dir(format!(
                "{s}: a testbed with nodes cannot live under {o} (the nodes overlay it); use e.g. /tmp"
            )));
        }
    }
    Ok(())
}

/// Runs `args` inside the mount namespace of `holder`.
pub fn in_namespace(holder: u32, args: &[&str]) -> Result<()> {
    let ns = format!("--mount=/proc/{holder}/ns/mnt");
    let out = Command::new("nsenter")
        .arg(&ns)
        .arg("--")
        .args(args)
        .output()
        .map_err(|e| Error::Node(format!("nsenter: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Node(format!(
            "in the node's mount namespace, `{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Sets up the node's mount namespace (held by process `holder`): the overlays of
/// [`OVERLAID`] with upper layers under `host_dir`, and the sysctl covers of
/// [`KUBELET_SYSCTLS`].
pub fn prepare_namespace(holder: u32, host_dir: &Path) -> Result<()> {
    for target in OVERLAID {
        let name = target.trim_start_matches('/').replace('/', "-");
        let upper = host_dir.join(&name).join("upper");
        let work = host_dir.join(&name).join("work");
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).map_err(Error::io("create", d))?;
        }
        let opts = format!(
            "lowerdir={target},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        in_namespace(
            holder,
            &["mount", "-t", "overlay", "overlay", "-o", &opts, target],
        )?;
    }
    let sysctl_dir = host_dir.join("sysctl");
    std::fs::create_dir_all(&sysctl_dir).map_err(Error::io("create", &sysctl_dir))?;
    for key in KUBELET_SYSCTLS {
        let real = Path::new("/proc/sys").join(key);
        let Ok(value) = std::fs::read_to_string(&real) else {
            continue;
        };
        let cover = sysctl_dir.join(key.replace('/', "."));
        std::fs::write(&cover, value).map_err(Error::io("write", &cover))?;
        in_namespace(
            holder,
            &[
                "mount",
                "--bind",
                &cover.to_string_lossy(),
                &real.to_string_lossy(),
            ],
        )?;
    }
    Ok(())
}

/// The mount namespace of `pid` (`mnt:[…]`), if readable.
pub fn mount_namespace_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The sysctl values the kubelet would change, as they are on the machine now.
pub fn machine_sysctls() -> Vec<(String, String)> {
    KUBELET_SYSCTLS
        .iter()
        .filter_map(|k| {
            std::fs::read_to_string(Path::new("/proc/sys").join(k))
                .ok()
                .map(|v| (k.replace('/', "."), v.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_cgroup_hierarchy_once() {
        let text = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n\
            99 31 0:31 / /mnt/cpuset\\040copy rw,relatime - cgroup cgroup rw,cpuset\n\
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
            42 31 0:38 /sub /elsewhere rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup_mounts(text),
            vec![
                (PathBuf::from("/sys/fs/cgroup/cpu"), false),
                (PathBuf::from("/sys/fs/cgroup/cpuset"), true),
                (PathBuf::from("/sys/fs/cgroup/systemd"), false),
                (PathBuf::from("/sys/fs/cgroup/unified"), false),
            ]
        );
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
    }

    #[test]
    fn reads_routes_and_checks_overlap() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            br0\t0000F00A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_routes(text);
        assert_eq!(
            r,
            vec![
                (u32::from_be_bytes([192, 0, 2, 0]), 0xffff_ff00),
                (u32::from_be_bytes([10, 240, 0, 0]), 0xffff_0000)
            ]
        );
        let net = NodeNetwork::new(3);
        assert_eq!(net.subnet(), "10.240.3.0/24");
        assert!(overlaps(r[1], (net.base(), 0xffff_ff00)));
        assert!(!overlaps(r[0], (net.base(), 0xffff_ff00)));
        let last = NodeNetwork::new(NETS - 1);
        assert_eq!(last.subnet(), "10.255.255.0/24");
        assert_eq!(last.gateway(), Ipv4Addr::new(10, 255, 255, 1));
        assert_eq!(last.service_cidr(), "10.255.255.0/28");
        assert_eq!(last.bridge, "fedtbfff");
    }

    #[test]
    fn reads_listeners_of_an_address() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0103F00A:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n\
            1: 0103F00A:A411 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 2 1\n\
            2: 0103F00A:01BB 1003F00A:C350 01 00000000:00000000 00:00000000 00000000 0 0 3 1\n\
            3: 0100007F:A411 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 4 1\n\
            4: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5 1\n";
        let gw = NodeNetwork::new(3).gateway();
        assert_eq!(gw, Ipv4Addr::new(10, 240, 3, 1));
        // LISTEN only (an established connection on :443 is not one), this address only.
        assert_eq!(parse_listening(text, gw), vec![443, 42001]);
        assert_eq!(parse_listening(text, Ipv4Addr::LOCALHOST), vec![42001]);
        assert!(parse_listening(text, Ipv4Addr::new(10, 240, 4, 1)).is_empty());
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        let a = node_id(Path::new("/tmp/tb"), "cluster-1");
        assert_eq!(a, node_id(Path::new("/tmp/tb"), "cluster-1"));
        assert_ne!(a, node_id(Path::new("/tmp/tb"), "cluster-2"));
        assert_ne!(a, node_id(Path::new("/tmp/tb2"), "cluster-1"));
        assert_eq!(a.len(), 12);
    }
}
