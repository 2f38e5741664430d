//! Real nodes: Pods run (CNI network, Secret volumes, the `kubernetes` Service), two testbeds
//! with nodes share the machine without meeting, and nothing is left on the machine after a
//! drop or after the owner is SIGKILLed and the next `up` cleans up. Needs `tools/build.sh
//! nodes` and the Debian packages `.ci/run` installs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::node::{self, HostState, NodeInfo, PAUSE_IMAGE};
use testbed::state::{STATE_FILE, State};
use testbed::{NodeImages, Testbed, TestbedOptions};

fn figure(what: &str, value: impl std::fmt::Display) {
    eprintln!("[figure] {what}: {value}");
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Deployment of `replicas` pause Pods on the node's network, each mounting Secret `s`,
/// hardened like the agent's.
async fn run_pods(client: &kube::Client, replicas: i32) -> Vec<Pod> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "stringData": {"key": "first"}});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(secret).unwrap(),
        )
        .await
        .unwrap();
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pause"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "pause"}},
            "template": {
                "metadata": {"labels": {"app": "pause"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65535,
                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never",
                        "securityContext": {"readOnlyRootFilesystem": true,
                            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "s", "mountPath": "/s"}],
                    }],
                    "volumes": [{"name": "s", "secret": {"secretName": "s"}}],
                },
            },
        },
    });
    Api::<Deployment>::namespaced(client.clone(), "default")
        .patch("pause", &PatchParams::apply("test"), &Patch::Apply(&d))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait_for("the pause Pods to run", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels("app=pause"))
            .await
            .ok()?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
            })
            .collect();
        (running.len() == replicas as usize).then_some(running)
    })
    .await
}

/// Everything of node `info` and testbed directory `dir` is gone from the machine, and the
/// machine looks as it did before (`before`). Network namespaces and their veths are freed
/// by the kernel asynchronously, so this waits a little for them.
async fn assert_nothing_left(dir: &Path, infos: &[NodeInfo], before: &HostState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut left: Vec<String> = infos.iter().flat_map(node::leftovers).collect();
        let veths = Command::new("ip")
            .args(["-o", "link", "show", "type", "veth"])
            .output()
            .unwrap();
        let veth_text = String::from_utf8_lossy(&veths.stdout).into_owned();
        for info in infos {
            if veth_text.contains(&format!("master {}", info.network.bridge)) {
                left.push(format!("veths on {}", info.network.bridge));
            }
        }
        let now = HostState::now(dir);
        if left.is_empty() && now == *before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {left:?}\nhost before: {before:#?}\nhost now: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pids in the node's cgroup subtree (its Pods' processes).
fn pod_pids(info: &NodeInfo) -> Vec<u32> {
    node::host::cgroup_pids(&info.cgroup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_on_nodes_of_two_testbeds_and_nothing_is_left() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let before: Vec<HostState> = dirs.iter().map(|d| HostState::now(d.path())).collect();
    let start = |d: &Path| {
        Testbed::start(
            TestbedOptions::clusters(1)
                .dir(d)
                .with_nodes()
                .node_images(NodeImages::None),
        )
    };
    let t = Instant::now();
    let (a, b) = futures::future::join(start(dirs[0].path()), start(dirs[1].path())).await;
    let (a, b) = (a.unwrap(), b.unwrap());
    figure(
        "two testbeds with a node each, in parallel",
        format!("{:.1?}", t.elapsed()),
    );
    let (na, nb) = (
        a.node("cluster-1").unwrap().clone(),
        b.node("cluster-1").unwrap().clone(),
    );
    figure("node ready (a)", format!("{:.1?}", na.ready_in()));
    figure("node ready (b)", format!("{:.1?}", nb.ready_in()));
    // Namespaced per testbed: different bridges, networks and cgroups.
    assert_ne!(na.network(), nb.network());
    assert_ne!(na.info().cgroup, nb.info().cgroup);
    assert_ne!(na.info().id, nb.info().id);

    let pods_a = run_pods(&a.cluster("cluster-1").unwrap().client().await.unwrap(), 2).await;
    let pods_b = run_pods(&b.cluster("cluster-1").unwrap().client().await.unwrap(), 1).await;
    // Pods are on their node's network, and their processes in its cgroups, hardened.
    let (first, _) = na.network().pod_range();
    for p in &pods_a {
        let ip: std::net::Ipv4Addr = p
            .status
            .as_ref()
            .unwrap()
            .pod_ip
            .as_ref()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ip.octets()[..3], first.octets()[..3], "{ip}");
        assert!(ip.octets()[3] >= 16);
    }
    assert_eq!(pods_b.len(), 1);
    let pids = pod_pids(na.info());
    assert!(pids.len() >= 4, "2 sandboxes + 2 containers: {pids:?}");
    // The sandboxes and the containers both run pause here: all as 65535, no capabilities,
    // no privilege escalation, seccomp filtered.
    for pid in &pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status.contains("Uid:\t65535\t65535\t65535\t65535"),
            "{status}"
        );
        assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert!(status.contains("Seccomp:\t2"), "{status}");
    }

    // The Secret volume is a real kubelet volume: a tmpfs that exists only in the node's
    // mount namespace, with the Secret's content.
    let pod = &pods_a[0];
    let uid = pod.metadata.uid.as_deref().unwrap();
    let file = na.dir().join(format!(
        "kubelet/pods/{uid}/volumes/kubernetes.io~secret/s/key"
    ));
    let holder = na
        .processes()
        .iter()
        .find(|(role, ..)| *role == "node-namespace")
        .map(|(_, pid, _)| *pid)
        .unwrap();
    let out = Command::new("nsenter")
        .arg(format!("--mount=/proc/{holder}/ns/mnt"))
        .arg("cat")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first");
    assert!(
        !file.exists(),
        "the volume is not visible outside the node's mount namespace"
    );

    // The machine's settings are untouched; the kubelet wrote its values into the covers.
    assert_eq!(HostState::now(dirs[0].path()).sysctls, before[0].sysctls);
    let cover = std::fs::read_to_string(na.dir().join("host/sysctl/vm.overcommit_memory")).unwrap();
    assert_eq!(
        cover.trim(),
        "1",
        "the kubelet set its value in the node's namespace"
    );

    // RSS of the node's processes.
    for (role, pid, _) in na.processes() {
        if let Some(kib) = testbed::process::rss_kib(pid) {
            figure(&format!("RSS {role}"), format!("{} MiB", kib / 1024));
        }
    }

    // One testbed goes; the other keeps running.
    let info_a = na.info().clone();
    let t = Instant::now();
    a.down().await;
    figure(
        "down of a testbed with a node",
        format!("{:.1?}", t.elapsed()),
    );
    assert_nothing_left(dirs[0].path(), &[info_a], &before[0]).await;
    let client_b = b.cluster("cluster-1").unwrap().client().await.unwrap();
    let still = Api::<Pod>::namespaced(client_b, "default")
        .list(&ListParams::default().labels("app=pause"))
        .await
        .unwrap();
    assert_eq!(
        still.items[0].status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(pod_pids(nb.info()).len(), 2, "b's Pod kept running");
    let info_b = nb.info().clone();
    drop(b);
    assert_nothing_left(dirs[1].path(), &[info_b], &before[1]).await;
}

fn testbed_cli(args: &[&str], dir: &Path, log: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn wait_ready(dir: &Path, owner: u32) -> State {
    wait_for(
        "the testbed to be ready",
        Duration::from_secs(180),
        || async {
            State::read(dir, STATE_FILE)
                .ok()
                .flatten()
                .filter(|s| s.ready && s.owner_pid == owner)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_owner_then_up_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let before = HostState::now(&dir);
    let up = ["up", "--clusters", "1", "--nodes", "--node-images", "none"];
    let mut owner = testbed_cli(&up, &dir, &tmp.path().join("owner.log"));
    let state = wait_ready(&dir, owner.id()).await;
    let info = state.nodes[0].clone();
    let client = testbed::cluster::client_from_file(&state.clusters[0].kubeconfig)
        .await
        .unwrap();
    run_pods(&client, 2).await;
    let pids = pod_pids(&info);
    assert!(!pids.is_empty());

    owner.kill().unwrap(); // SIGKILL: no destructor runs
    owner.wait().unwrap();
    // The parent-death signal took the testbed's own processes; what a node leaves is still
    // there (containerd's shims and the Pods outlive containerd), and its cgroups and bridge.
    wait_for(
        "the testbed's processes to die",
        Duration::from_secs(10),
        || async { state.processes.iter().all(|p| !p.is_alive()).then_some(()) },
    )
    .await;
    let found = node::leftovers(&info);
    assert!(
        found.iter().any(|l| l.starts_with("shims"))
            && found.iter().any(|l| l.starts_with("cgroup")),
        "{found:?}"
    );
    assert!(
        pids.iter().any(|p| testbed::process::pid_alive(*p)),
        "Pods outlive the owner"
    );

    // The next `up` on the directory removes all of it before it starts again.
    let mut second = testbed_cli(&up, &dir, &tmp.path().join("second.log"));
    let state2 = wait_ready(&dir, second.id()).await;
    assert!(
        pids.iter().all(|p| !testbed::process::pid_alive(*p)),
        "old Pods killed"
    );
    let owner_log = std::fs::read_to_string(dir.join("testbed.log")).unwrap_or_default();
    let second_log = std::fs::read_to_string(tmp.path().join("second.log")).unwrap();
    assert!(
        second_log.contains("killed leftovers") || owner_log.contains("killed leftovers"),
        "{second_log}"
    );
    assert_eq!(state2.nodes.len(), 1);
    let out = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["down", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    second.wait().unwrap();
    assert_nothing_left(&dir, &[info, state2.nodes[0].clone()], &before).await;
}
