//! Real nodes: Pods run (CNI network, Secret volumes, the `kubernetes` Service), Pods reach
//! the testbed's other clusters' apiservers through their bridge with TLS verified, two
//! testbeds with nodes share the machine without meeting, and nothing is left on the machine
//! after a drop or after the owner is SIGKILLed and the next `up` cleans up. Needs
//! `tools/build.sh nodes`, the Debian packages `.ci/run` installs, and the workspace's
//! `federator` binary (its image; `cargo build -p federator`).

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

/// A Pod in `default` running the project's `federator` image once (`restartPolicy: Never`)
/// with `args`, Secret `secret` mounted at `/kc`; returns its container's exit code and its
/// log (CRI format) once it has terminated.
async fn run_federator_pod(
    node: &testbed::Node,
    name: &str,
    secret: &str,
    args: &[&str],
) -> (i32, String) {
    let client = node.cluster().client().await.unwrap();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "federator", "image": federator_api::names::FEDERATOR_IMAGE,
                "imagePullPolicy": "Never", "args": args,
                "securityContext": {"readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "kc", "mountPath": "/kc", "readOnly": true}],
            }],
            "volumes": [{"name": "kc", "secret": {"secretName": secret}}],
        },
    });
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    let code = wait_for(
        &format!("Pod {name} to terminate"),
        Duration::from_secs(90),
        || async {
            let p = pods.get(name).await.ok()?;
            p.status?
                .container_statuses?
                .first()?
                .state
                .as_ref()?
                .terminated
                .as_ref()
                .map(|t| t.exit_code)
        },
    )
    .await;
    (code, node.container_log("default", name, "federator"))
}

/// The lines of one stream (`stdout`/`stderr`) of a CRI-format container log.
fn stream(log: &str, which: &str) -> String {
    log.lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let (_time, s, _tag) = (f.next()?, f.next()?, f.next()?);
            (s == which).then(|| f.next().unwrap_or("").to_owned())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `c`'s admin kubeconfig with server `url` and `ca_pem` as the CA it trusts.
fn with_ca(c: &testbed::Cluster, url: &str, ca_pem: &str) -> String {
    let admin = c.admin_credentials();
    let creds = testbed::kubeconfig::Credentials::ClientCert {
        cert_pem: admin.cert_pem.clone(),
        key_pem: admin.key_pem.clone(),
    };
    testbed::kubeconfig::render(c.name(), url, ca_pem, "admin", &creds).unwrap()
}

/// Runs the workspace's `federator` on the host; returns (exit code, stdout, stderr).
fn federator_on_host(args: &[&str]) -> (i32, String, String) {
    let bin = testbed::image::own_bin_dir().unwrap().join("federator");
    let out = Command::new(&bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Pods on a node reach the testbed's other clusters' apiservers through their own bridge
/// address, TLS verified against each cluster's CA, as a hub in a Pod reaches its members;
/// the host reaches them at the same URLs; a wrong CA fails; after the testbed is dropped,
/// no forwarder listens and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_every_cluster_through_their_bridge_with_tls_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let before = HostState::now(&dir);
    // The federator image only (the agent's is not needed here).
    let bin = testbed::image::own_bin_dir().unwrap();
    let federator_image = testbed::image::project_images(&bin, &bin.join("images"))
        .unwrap()
        .into_iter()
        .find(|a| a.name == federator_api::names::FEDERATOR_IMAGE)
        .unwrap();
    let t = Instant::now();
    let tb = Testbed::start(
        TestbedOptions::named(["hub", "member-1", "member-2"])
            .dir(&dir)
            .with_nodes_in(["hub", "member-1"])
            .node_images(NodeImages::Archives(vec![federator_image.path.clone()])),
    )
    .await
    .unwrap();
    figure(
        "three clusters, two with a node",
        format!("{:.1?}", t.elapsed()),
    );
    let cluster = |n: &str| tb.cluster(n).unwrap().clone();
    let (hub, m1, m2) = (cluster("hub"), cluster("member-1"), cluster("member-2"));

    // Every apiserver, from every node, at the documented URL; from the host here, with each
    // cluster's own CA (and its admin certificate), TLS verified.
    for node in [&hub, &m1] {
        let gateway = node.node_network().unwrap().gateway();
        let mut ports = testbed::node::host::listening_ports(gateway);
        ports.sort_unstable();
        let mut want: Vec<u16> = tb
            .clusters()
            .iter()
            .filter(|c| c.name() != node.name())
            .map(|c| c.port())
            .chain([443])
            .collect();
        want.sort_unstable();
        assert_eq!(ports, want, "the forwarders on {gateway}");
        for c in tb.clusters() {
            let url = c.server_from(node).unwrap();
            let port = if c.name() == node.name() {
                443
            } else {
                c.port()
            };
            assert_eq!(url, format!("https://{gateway}:{port}"));
            assert!(c.node_gateways().contains(&gateway));
            let client = testbed::cluster::client_from_yaml(&c.kubeconfig_from(node).unwrap())
                .await
                .unwrap();
            client.apiserver_version().await.unwrap_or_else(|e| {
                panic!("{} from {}'s node at {url}: {e}", c.name(), node.name())
            });
            // Another cluster's CA does not verify it.
            let other = tb.clusters().iter().find(|o| o.name() != c.name()).unwrap();
            let e = testbed::cluster::client_from_yaml(&with_ca(c, &url, other.ca_pem()))
                .await
                .unwrap()
                .apiserver_version()
                .await
                .expect_err("a wrong CA must not verify the apiserver");
            let shown = format!("{e:?}");
            assert!(
                shown.contains("UnknownIssuer") || shown.contains("certificate"),
                "{shown}"
            );
        }
    }
    // A cluster without a node gives no URL from its "node".
    let e = hub.server_from(&m2).unwrap_err().to_string();
    assert!(e.contains("member-2 has no node"), "{e}");

    // Pods of the project's `federator` image, with member-2's admin kubeconfig at the URL
    // for their node (from a Secret), run `federator init` against member-2, as a hub in a
    // Pod reaches a member. First, as the control, the same kubeconfig with another
    // cluster's CA (hub's): nothing is reached. Then the right CA, on hub's node: member-2 is
    // initialised. Then the host, at the same URL, and a Pod on member-1's node find it
    // initialised with the same root.
    for node in [&hub, &m1] {
        let url = m2.server_from(node).unwrap();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kc"},
            "stringData": {"good": m2.kubeconfig_from(node).unwrap(),
                "wrong-ca": with_ca(&m2, &url, hub.ca_pem())}});
        Api::<Secret>::namespaced(node.client().await.unwrap(), "default")
            .create(
                &PostParams::default(),
                &serde_json::from_value(secret).unwrap(),
            )
            .await
            .unwrap();
    }
    let init = |kc: &'static str| ["--hub-kubeconfig", kc, "init"];
    // The root fingerprint `init` prints: `  root for cluster.local: sha256 <hex>`.
    let root_of = |out: &str| -> String {
        out.lines()
            .find_map(|l| l.trim().strip_prefix("root for cluster.local: sha256 "))
            .unwrap_or_else(|| panic!("no root fingerprint in: {out}"))
            .to_owned()
    };
    let (hub_node, m1_node) = (tb.node("hub").unwrap(), tb.node("member-1").unwrap());
    let url = m2.server_from(&hub).unwrap();

    let (code, log) = run_federator_pod(hub_node, "wrong-ca", "kc", &init("/kc/wrong-ca")).await;
    assert_eq!(code, 1, "{log}");
    assert!(stream(&log, "stdout").trim().is_empty(), "{log}");
    assert!(
        stream(&log, "stderr").contains(&format!("cannot reach the API server at {url}")),
        "{log}"
    );

    let t = Instant::now();
    let (code, log) = run_federator_pod(hub_node, "good", "kc", &init("/kc/good")).await;
    figure(
        "a federator Pod's run through its bridge (create to terminated)",
        format!("{:.1?}", t.elapsed()),
    );
    let out = stream(&log, "stdout");
    assert_eq!(code, 0, "{log}");
    assert!(out.contains("federation initialised"), "{log}");
    let root = root_of(&out);

    let kc = tmp.path().join("member-2-from-hub.kubeconfig");
    m2.write_kubeconfig_from(&hub, &kc).unwrap();
    let (code, out, err) = federator_on_host(&["--hub-kubeconfig", kc.to_str().unwrap(), "init"]);
    assert_eq!(code, 0, "federator init from the host at {url}: {err}");
    assert!(
        out.contains("already initialised; nothing changed"),
        "{out}"
    );
    assert_eq!(root_of(&out), root);

    let (code, log) = run_federator_pod(m1_node, "good", "kc", &init("/kc/good")).await;
    let out = stream(&log, "stdout");
    assert_eq!(code, 0, "{log}");
    assert!(
        out.contains("already initialised; nothing changed"),
        "{log}"
    );
    assert_eq!(root_of(&out), root);

    // An apiserver restart (same port, same certificate) keeps the forwarders' URLs working.
    let through_hub = || async {
        testbed::cluster::client_from_yaml(&m2.kubeconfig_from(&hub).unwrap())
            .await
            .unwrap()
            .apiserver_version()
            .await
    };
    m2.stop().await;
    assert!(through_hub().await.is_err(), "member-2 is stopped");
    m2.start_again().await.unwrap();
    through_hub().await.unwrap();

    // The state file records the URLs (what `testbed up` and `status` print).
    let state = tb.state();
    let m2_info = state
        .clusters
        .iter()
        .find(|c| c.name == "member-2")
        .unwrap();
    assert_eq!(m2_info.servers_from.get("hub"), Some(&url));
    assert_eq!(m2_info.servers_from.len(), 2);

    // Teardown: no forwarder listens on a bridge address any more, nothing is left.
    let infos: Vec<NodeInfo> = tb.nodes().iter().map(|n| n.info().clone()).collect();
    let t = Instant::now();
    tb.down().await;
    figure(
        "down (three clusters, two nodes)",
        format!("{:.1?}", t.elapsed()),
    );
    for info in &infos {
        let gateway = info.network.gateway();
        wait_for(
            &format!("no listener on {gateway}"),
            Duration::from_secs(10),
            || async {
                testbed::node::host::listening_ports(gateway)
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
    }
    assert_nothing_left(&dir, &infos, &before).await;
}
