//! Process lifecycle: OpenBao, outages (stop/start), and no leftovers on drop, panic or SIGKILL.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use testbed::process::pid_alive;
use testbed::state::{STATE_FILE, State};
use testbed::{Testbed, TestbedOptions};

async fn start(opts: TestbedOptions) -> Testbed {
    match Testbed::start(opts).await {
        Ok(tb) => tb,
        Err(e) => panic!("testbed did not start: {e}"),
    }
}

fn all_pids(tb: &Testbed) -> Vec<u32> {
    tb.state().processes.iter().map(|p| p.pid).collect()
}

async fn wait_all_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while pids.iter().any(|p| pid_alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "still alive after {within:?}: {:?}",
            pids.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn openbao_answers_health_and_mounts_a_pki_engine() {
    let tb = start(TestbedOptions::clusters(0).with_bao()).await;
    let bao = tb.bao().unwrap();

    let health = bao.health().await.unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
    let h = health.json().unwrap();
    assert_eq!(
        (h["initialized"].as_bool(), h["sealed"].as_bool()),
        (Some(true), Some(false))
    );

    // Address and token files for other processes; the token is private.
    let addr = std::fs::read_to_string(tb.dir().join("bao/addr")).unwrap();
    assert_eq!(addr.trim(), bao.addr());
    let token_file = tb.dir().join("bao/token");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        bao.token()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let denied = testbed::http::post(
        bao.host_port(),
        "/v1/sys/mounts/pki",
        Some("wrong"),
        &serde_json::json!({"type": "pki"}),
    )
    .await
    .unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);

    let mount = bao
        .post("sys/mounts/pki", &serde_json::json!({"type": "pki"}))
        .await
        .unwrap();
    assert!(mount.is_success(), "{} {}", mount.status, mount.body);
    let mounts = bao.get("sys/mounts").await.unwrap().json().unwrap();
    assert_eq!(mounts["data"]["pki/"]["type"], "pki", "{mounts}");
    let root = bao
        .post(
            "pki/root/generate/internal",
            &serde_json::json!({"common_name": "testbed root", "ttl": "87600h", "key_type": "ec"}),
        )
        .await
        .unwrap();
    assert_eq!(root.status, 200, "{}", root.body);
    let cert = root.json().unwrap()["data"]["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
}

#[tokio::test]
async fn a_stopped_cluster_is_unreachable_and_comes_back_with_its_data() {
    let tb = start(TestbedOptions::clusters(2)).await;
    let c1 = tb.cluster("cluster-1").unwrap().clone();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("survives".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("k".into(), "v".into())])),
        ..Default::default()
    };
    let api = Api::<Secret>::namespaced(c1.client().await.unwrap(), "default");
    api.create(&PostParams::default(), &secret).await.unwrap();
    let old_pid = c1.pid().unwrap();

    c1.stop().await;
    assert!(!c1.is_running());
    assert!(!pid_alive(old_pid));
    let down = Api::<Secret>::namespaced(c1.client().await.unwrap(), "default")
        .get("survives")
        .await;
    assert!(down.is_err(), "a stopped apiserver answered");
    // The other cluster is unaffected.
    let c2 = tb.cluster("cluster-2").unwrap().client().await.unwrap();
    Api::<Secret>::namespaced(c2, "default")
        .list(&Default::default())
        .await
        .unwrap();

    c1.start_again().await.unwrap();
    let back = Api::<Secret>::namespaced(c1.client().await.unwrap(), "default")
        .get("survives")
        .await
        .unwrap();
    assert_eq!(back.data.unwrap()["k"].0, b"v");
    assert_ne!(c1.pid(), Some(old_pid));
}

#[tokio::test]
async fn dropping_the_testbed_kills_every_process_and_removes_its_directory() {
    let tb = start(TestbedOptions::clusters(1).with_bao()).await;
    let pids = all_pids(&tb);
    assert_eq!(pids.len(), 3, "etcd, apiserver, bao");
    assert!(pids.iter().all(|p| pid_alive(*p)));
    let dir = tb.dir().to_owned();
    // A clone of a cluster handle must not keep the apiserver alive.
    let handle = tb.cluster("cluster-1").unwrap().clone();
    drop(tb);
    wait_all_gone(&pids, Duration::from_secs(5)).await;
    assert!(!handle.is_running());
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn a_panicking_test_leaves_no_processes() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tb = start(TestbedOptions::clusters(1)).await;
            tx.send(all_pids(&tb)).unwrap();
            panic!("deliberate panic with a running testbed");
        })
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let pids = rx.recv().unwrap();
    assert_eq!(pids.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| pid_alive(*p)) {
        assert!(Instant::now() < deadline, "processes survived the panic");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The owner dies by SIGKILL, so no destructor runs: the parent-death signal must take the
/// children with it.
#[tokio::test]
async fn sigkill_of_the_owner_leaves_no_processes() {
    let dir = tempfile::tempdir().unwrap();
    let tb_dir = dir.path().join("tb");
    let mut owner = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["up", "--clusters", "2", "--bao", "--dir"])
        .arg(&tb_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("owner.log")).unwrap())
        .spawn()
        .unwrap();
    let state = wait_ready(&tb_dir, owner.id(), &dir.path().join("owner.log")).await;
    let pids: Vec<u32> = state.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids.len(), 4, "etcd, 2 apiservers, bao: {state:?}");
    assert!(pids.iter().all(|p| pid_alive(*p)));

    owner.kill().unwrap(); // SIGKILL
    owner.wait().unwrap();
    wait_all_gone(&pids, Duration::from_secs(5)).await;

    // `down` on the dead owner's directory cleans up the state file.
    let out = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["down", "--dir"])
        .arg(&tb_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!tb_dir.join(STATE_FILE).exists());
}

/// `up` in the foreground, then `status` and `down` from "another shell".
#[tokio::test]
async fn the_cli_status_and_down_work_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let tb_dir = dir.path().join("tb");
    let bin = env!("CARGO_BIN_EXE_testbed");
    let mut owner = Command::new(bin)
        .args(["up", "--clusters", "1", "--dir"])
        .arg(&tb_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("owner.log")).unwrap())
        .spawn()
        .unwrap();
    let state = wait_ready(&tb_dir, owner.id(), &dir.path().join("owner.log")).await;
    let pids: Vec<u32> = state.processes.iter().map(|p| p.pid).collect();
    assert!(tb_dir.join("cluster-1/kubeconfig").is_file());

    let status = Command::new(bin)
        .args(["status", "--dir"])
        .arg(&tb_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success());
    assert!(
        text.contains("cluster-1") && text.contains("ready"),
        "{text}"
    );

    // A second `up` on the same directory reuses it; a different shape is refused clearly.
    let again = Command::new(bin)
        .args(["up", "--clusters", "1", "--dir"])
        .arg(&tb_dir)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("reusing"));
    let other = Command::new(bin)
        .args(["up", "--clusters", "2", "--dir"])
        .arg(&tb_dir)
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("testbed down --dir"));

    let down = Command::new(bin)
        .args(["down", "--dir"])
        .arg(&tb_dir)
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let exit = owner.wait().unwrap();
    assert!(
        exit.success(),
        "the owner should exit cleanly on SIGTERM: {exit}"
    );
    wait_all_gone(&pids, Duration::from_secs(5)).await;
    assert!(!tb_dir.join(STATE_FILE).exists());
}

async fn wait_ready(dir: &Path, owner: u32, log: &Path) -> State {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(Some(s)) = State::read(dir, STATE_FILE)
            && s.owner_pid == owner
            && s.ready
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "testbed up not ready; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn missing_binaries_fail_with_the_install_instruction() {
    let mut opts = TestbedOptions::clusters(1);
    opts.bin_dir = Some("/nonexistent/testbed-bin".into());
    let err = Testbed::start(opts).await.unwrap_err().to_string();
    assert!(err.contains("run tools/build.sh"), "{err}");
}
