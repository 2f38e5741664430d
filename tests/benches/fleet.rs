//! The fleet benchmark: federator on N real clusters of the testbed (a kube-apiserver each,
//! one shared etcd), next to the do-it-yourself flow users run without it, in one run per N.
//!
//! ```sh
//! cargo build --release -p federator -p cluster-agent
//! cargo bench -p federator-e2e --bench fleet                 # N = 3, 10, 25
//! FLEET_N=3,10 FLEET_IDLE_SECS=60 cargo bench -p federator-e2e --bench fleet
//! ```
//!
//! Per N: a hub cluster, N member clusters and one extra cluster (the one whose trust domain
//! comes and goes). Members 1–10 share `cluster.local`; the others are in trust domains of five
//! (`td1.example`, ...). Measured, in this order:
//!
//! 1. **DIY**: Istio's `tools/certs` openssl sequence (root once; per cluster key, CSR, signing,
//!    `cert-chain.pem`) and `kubectl create namespace istio-system` + `kubectl create secret
//!    generic cacerts`, until every cluster's `cacerts` reads back valid; with RSA-4096 (the
//!    Makefiles' default) and ECDSA P-256 (federator's default). The Secrets are deleted again.
//! 2. **init** and, with `federator serve` running, each **join** in turn (`--agent-mode
//!    external`; the agent starts as soon as `join` returns, as a Deployment would): `join` wall
//!    time, and `join` returned → that cluster's `cacerts` valid.
//! 3. **Idle**: hub and agent RSS and CPU over a window, the hub's RSS increment per member, and
//!    the API requests of hub and agents per member per minute (from the apiservers' audit logs:
//!    the hub runs with a client certificate in [`testbed::AUDITED_GROUP`]), writes apart.
//! 4. **Bundle changes**: the extra cluster joins with a new trust domain (a new root in the
//!    bundle) and leaves again, several times: the hub's new bundle generation → acknowledged by
//!    all N members (the members' `MemberCluster` status, `bundleGenerationAcknowledged`).
//! 5. **Root rotation** of `cluster.local` (min(N, 10) members), wall time minus the drain.
//! 6. **Hub restart**: SIGKILL, start again; → `/readyz`, → every member reported in the
//!    metrics, and the writes the hub made while recovering.
//!
//! Prints a table and writes `fleet.json`, `fleet.txt` and `fleet.png` under
//! `docs/performance/` (`FLEET_OUT` to change). Every process it starts is stopped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use federator_api::hub::{Federation as FederationObject, MemberCluster};
use federator_api::names;
use federator_e2e::{Federation, cacerts_of};
use federator_testkit::tools_certs::{self, Key};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

/// The hub's client-certificate user in the hub cluster (audited).
const HUB_USER: &str = "federator-hub-bench";
/// Log level of the hub and agents unless `FLEET_LOG_LEVEL` says otherwise: what an operator
/// runs (debug logging costs CPU; raise it only to read a timeline, not for the figures).
const LOG_LEVEL: &str = "info";
/// Members per trust domain after the first ten.
const DOMAIN_SIZE: usize = 5;

#[derive(Clone)]
struct Config {
    ns: Vec<usize>,
    idle: Duration,
    changes: usize,
    drain: Duration,
    out: PathBuf,
    apiserver_args: Vec<String>,
    parallel_starts: usize,
    log_level: String,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config() -> Config {
    let ns = std::env::var("FLEET_N")
        .unwrap_or_else(|_| "3,10,25".into())
        .split(',')
        .map(|n| n.trim().parse().expect("FLEET_N: comma-separated counts"))
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Config {
        ns,
        idle: Duration::from_secs(env_or("FLEET_IDLE_SECS", 60)),
        changes: env_or("FLEET_CHANGES", 8),
        drain: Duration::from_secs(env_or("FLEET_DRAIN_SECS", 2)),
        out: std::env::var("FLEET_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("docs/performance")),
        // The apiservers' memory: no profiling endpoints, small watch caches (the fleet's
        // objects are few per cluster).
        apiserver_args: std::env::var("FLEET_APISERVER_ARGS")
            .unwrap_or_else(|_| "--profiling=false --default-watch-cache-size=10".into())
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        parallel_starts: env_or("FLEET_PARALLEL_STARTS", 6),
        log_level: std::env::var("FLEET_LOG_LEVEL").unwrap_or_else(|_| LOG_LEVEL.into()),
    }
}

fn trust_domain(i: usize) -> String {
    if i < 10 {
        "cluster.local".into()
    } else {
        format!("td{}.example", (i - 10) / DOMAIN_SIZE + 1)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile.
fn pct(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn summary(values: &[f64]) -> Value {
    json!({
        "n": values.len(),
        "p50": pct(values, 50.0),
        "p95": pct(values, 95.0),
        "p99": pct(values, 99.0),
        "max": pct(values, 100.0),
    })
}

// ---------------------------------------------------------------------------------------------
// /proc

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at `) `.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

fn rss_mib(pid: u32) -> f64 {
    testbed::process::rss_kib(pid).unwrap_or(0) as f64 / 1024.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|m| m.trim().to_owned()))
        .unwrap_or_default();
    let cmd = |c: &str, a: &[&str]| {
        std::process::Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1),
        "memory": mem,
        "kernel": cmd("uname", &["-r"]),
        "commit": cmd("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]),
        "date": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

// ---------------------------------------------------------------------------------------------
// The hub's view, from watches on the hub cluster.

#[derive(Default)]
struct Seen {
    /// Federation status: bundle generation and when it was first seen.
    generation: (i64, Option<Instant>),
    /// Rotations in progress: trust domain → phase.
    rotations: BTreeMap<String, String>,
    /// Rotation phases as they were entered.
    phase_log: Vec<(Instant, String, String)>,
    /// Member → (acknowledged bundle generation, when first seen).
    acks: BTreeMap<String, (i64, Instant)>,
    /// Member → root SHA-256 of its installed CA.
    roots: BTreeMap<String, String>,
}

struct Recorder {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Recorder {
    fn start(client: kube::Client) -> Recorder {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let members: Api<MemberCluster> = Api::namespaced(client.clone(), names::NAMESPACE);
        let t1 = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(members, watcher::Config::default()));
            while let Some(e) = events.next().await {
                let now = Instant::now();
                let mut s = s.lock().unwrap();
                match e {
                    Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => {
                        let name = m.metadata.name.clone().unwrap_or_default();
                        let st = m.status.unwrap_or_default();
                        let ack = st.bundle_generation_acknowledged;
                        if s.acks.get(&name).map(|a| a.0) != Some(ack) {
                            s.acks.insert(name.clone(), (ack, now));
                        }
                        s.roots.insert(name, st.ca_root_sha256);
                    }
                    Ok(watcher::Event::Delete(m)) => {
                        let name = m.metadata.name.unwrap_or_default();
                        s.acks.remove(&name);
                        s.roots.remove(&name);
                    }
                    _ => {}
                }
            }
        });
        let s = seen.clone();
        let feds: Api<FederationObject> = Api::namespaced(client, names::NAMESPACE);
        let t2 = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(
                feds,
                federator_api::plumbing::by_name(names::FEDERATION)
            ));
            while let Some(e) = events.next().await {
                let now = Instant::now();
                let mut s = s.lock().unwrap();
                if let Ok(watcher::Event::Apply(f) | watcher::Event::InitApply(f)) = e {
                    let st = f.status.unwrap_or_default();
                    if st.bundle_generation != s.generation.0 {
                        s.generation = (st.bundle_generation, Some(now));
                    }
                    let now_phases: BTreeMap<String, String> = st
                        .rotations
                        .iter()
                        .map(|r| (r.trust_domain.clone(), r.phase.to_string()))
                        .collect();
                    for (td, p) in &now_phases {
                        if s.rotations.get(td) != Some(p) {
                            s.phase_log.push((now, td.clone(), p.clone()));
                        }
                    }
                    let ended: Vec<String> = s
                        .rotations
                        .keys()
                        .filter(|td| !now_phases.contains_key(*td))
                        .cloned()
                        .collect();
                    for td in ended {
                        s.phase_log.push((now, td, "done".into()));
                    }
                    s.rotations = now_phases;
                }
            }
        });
        Recorder {
            seen,
            tasks: vec![t1, t2],
        }
    }

    /// Polls the recorded state (every 5 ms) until `f` returns a value.
    async fn until<T>(&self, what: &str, timeout: Duration, f: impl Fn(&Seen) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(&self.seen.lock().unwrap()) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the bundle generation is above `after`; returns it and when it was seen.
    async fn new_generation(&self, after: i64, timeout: Duration) -> Option<(i64, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = self.seen.lock().unwrap();
                if s.generation.0 > after {
                    return Some((s.generation.0, s.generation.1.unwrap()));
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until every one of `members` acknowledged generation `generation`; returns when
    /// the last one did (as the hub recorded it).
    async fn all_acked(&self, members: &[String], generation: i64, timeout: Duration) -> Instant {
        self.until(
            &format!("every member to acknowledge bundle generation {generation}"),
            timeout,
            |s| {
                let mut last = None::<Instant>;
                for m in members {
                    let (g, at) = s.acks.get(m)?;
                    if *g < generation {
                        return None;
                    }
                    last = Some(last.map_or(*at, |l| l.max(*at)));
                }
                last
            },
        )
        .await
    }

    fn generation(&self) -> i64 {
        self.seen.lock().unwrap().generation.0
    }
}

// ---------------------------------------------------------------------------------------------
// Audit logs: what the hub and the agents ask the apiservers.

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Requests {
    watches: u64,
    reads: u64,
    writes: u64,
    /// Each write as `verb resource/name` (for the recovery's report).
    write_list: Vec<String>,
}

/// The size of every cluster's audit log now.
fn audit_marks(fed: &Federation) -> BTreeMap<String, u64> {
    fed.testbed
        .clusters()
        .iter()
        .map(|c| {
            let len = std::fs::metadata(c.audit_log_path())
                .map(|m| m.len())
                .unwrap_or(0);
            (c.name().to_owned(), len)
        })
        .collect()
}

/// Who made an audited request: `hub` or `agent` (other ServiceAccounts: `None`).
fn actor(user: &str) -> Option<&'static str> {
    let sa = |name: &str| format!("system:serviceaccount:{}:{name}", names::NAMESPACE);
    if user == HUB_USER || user == sa(names::HUB_SERVICE_ACCOUNT) {
        Some("hub")
    } else if user == sa(names::AGENT_SERVICE_ACCOUNT) {
        Some("agent")
    } else {
        None
    }
}

/// The requests of hub and agents in every cluster's audit log since `marks`.
fn audit_since(
    fed: &Federation,
    marks: &BTreeMap<String, u64>,
) -> BTreeMap<&'static str, Requests> {
    use std::io::{Read, Seek};
    let mut out: BTreeMap<&'static str, Requests> = BTreeMap::new();
    for c in fed.testbed.clusters() {
        let Ok(mut f) = std::fs::File::open(c.audit_log_path()) else {
            continue;
        };
        let from = marks.get(c.name()).copied().unwrap_or(0);
        if f.seek(std::io::SeekFrom::Start(from)).is_err() {
            continue;
        }
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(who) = actor(e["user"]["username"].as_str().unwrap_or("")) else {
                continue;
            };
            let (verb, stage) = (
                e["verb"].as_str().unwrap_or(""),
                e["stage"].as_str().unwrap_or(""),
            );
            let r = out.entry(who).or_default();
            match (verb, stage) {
                ("watch", "ResponseStarted") => r.watches += 1,
                ("get" | "list", "ResponseComplete") => r.reads += 1,
                (
                    "create" | "update" | "patch" | "delete" | "deletecollection",
                    "ResponseComplete",
                ) => {
                    r.writes += 1;
                    let o = &e["objectRef"];
                    let mut what = o["resource"].as_str().unwrap_or("").to_owned();
                    if let Some(sub) = o["subresource"].as_str() {
                        what = format!("{what}/{sub}");
                    }
                    r.write_list.push(format!(
                        "{}: {verb} {what} {}",
                        c.name(),
                        o["name"].as_str().unwrap_or("")
                    ));
                }
                _ => {}
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// DIY: tools/certs + kubectl.

fn kubectl(fed: &Federation, cluster: &testbed::Cluster, args: &[&str]) -> std::process::Output {
    let bin = fed
        .testbed
        .binaries()
        .kubectl()
        .expect("kubectl: run tools/build.sh ops");
    std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(args)
        .output()
        .unwrap()
}

/// The DIY flow on `members`, timed until every one has valid `cacerts`. Returns the wall
/// time and the per-cluster times (openssl + kubectl).
async fn diy(fed: &Federation, members: &[String], key: Key) -> (Duration, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    tools_certs::root(key, &dir.path().join("root"));
    let mut per_cluster = Vec::new();
    for m in members {
        let t = Instant::now();
        let c = fed.testbed.cluster(m).unwrap();
        let files = tools_certs::cluster(key, &dir.path().join("root"), dir.path(), m);
        let ns = kubectl(fed, c, &["create", "namespace", names::ISTIO_NAMESPACE]);
        assert!(
            ns.status.success() || String::from_utf8_lossy(&ns.stderr).contains("AlreadyExists"),
            "{}",
            String::from_utf8_lossy(&ns.stderr)
        );
        let from = |f: &str| format!("--from-file={}", files.join(f).display());
        let out = kubectl(
            fed,
            c,
            &[
                "create",
                "secret",
                "generic",
                names::CACERTS_SECRET,
                "-n",
                names::ISTIO_NAMESPACE,
                &from("ca-cert.pem"),
                &from("ca-key.pem"),
                &from("root-cert.pem"),
                &from("cert-chain.pem"),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        per_cluster.push(ms(t.elapsed()));
    }
    // "Every cluster has valid cacerts": read back and verified (openssl -x509_strict).
    for m in members {
        let files = cacerts_of(fed.testbed.cluster(m).unwrap()).await.unwrap();
        federator_testkit::openssl::verify_cacerts(&files)
            .unwrap_or_else(|e| panic!("DIY cacerts of {m}: {e}"));
    }
    let total = start.elapsed();
    for m in members {
        let api: Api<Secret> = Api::namespaced(
            fed.testbed.cluster(m).unwrap().client().await.unwrap(),
            names::ISTIO_NAMESPACE,
        );
        api.delete(names::CACERTS_SECRET, &DeleteParams::default())
            .await
            .unwrap();
    }
    (total, per_cluster)
}

// ---------------------------------------------------------------------------------------------
// One fleet.

async fn cacerts_valid(c: &testbed::Cluster) -> bool {
    match cacerts_of(c).await {
        Some(f) => federator_core::cacerts::inspect(&f, time::OffsetDateTime::now_utc()).is_ok(),
        None => false,
    }
}

async fn readyz(addr: &str) -> bool {
    testbed::http::get(addr, "/readyz", None)
        .await
        .map(|r| r.is_success())
        .unwrap_or(false)
}

async fn bind_cluster_admin(cluster: &testbed::Cluster, user: &str) {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{user}-cluster-admin")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(cluster.client().await.unwrap())
        .create(&kube::api::PostParams::default(), &binding)
        .await
        .unwrap();
}

fn start_hub(fed: &mut Federation, kubeconfig: &Path, log_level: &str) {
    fed.start_serve_with(&[], log_level, kubeconfig);
}

async fn run_fleet(n: usize, cfg: &Config) -> Value {
    let names: Vec<String> = (1..=n).map(|i| format!("m{i:02}")).collect();
    let mut all: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), trust_domain(i)))
        .collect();
    all.push(("extra".into(), "change0.example".into()));
    let pairs: Vec<(&str, &str)> = all.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();

    let load_start = loadavg();
    println!(
        "\n=== N = {n}: starting {} apiservers (load {load_start})",
        n + 2
    );
    let t = Instant::now();
    let mut fed = Federation::with_options(
        "hub",
        &pairs,
        testbed::TestbedOptions::named(
            std::iter::once("hub".to_owned()).chain(all.iter().map(|(m, _)| m.clone())),
        )
        .apiserver_args(cfg.apiserver_args.clone())
        .max_parallel_starts(cfg.parallel_starts),
    )
    .await;
    let testbed_secs = t.elapsed().as_secs_f64();
    let apiserver_rss: f64 = fed
        .testbed
        .clusters()
        .iter()
        .filter_map(|c| c.pid())
        .map(rss_mib)
        .sum::<f64>()
        / (n + 2) as f64;
    println!("    ready in {testbed_secs:.1}s; apiserver RSS {apiserver_rss:.0} MiB each");

    // 1. DIY.
    let (diy_rsa, diy_rsa_each) = diy(&fed, &names, Key::Rsa4096).await;
    let (diy_ec, diy_ec_each) = diy(&fed, &names, Key::EcdsaP256).await;
    println!(
        "    DIY: RSA-4096 {:.1}s, ECDSA P-256 {:.1}s",
        diy_rsa.as_secs_f64(),
        diy_ec.as_secs_f64()
    );

    // 2. init, serve, joins.
    let fed_start = Instant::now();
    let t = Instant::now();
    fed.federator_ok(&["init"]);
    let init_ms = ms(t.elapsed());
    let hub_kubeconfig = fed.dir.join("hub-bench.kubeconfig");
    // The hub's own identity, audited, with the admin's rights (a client certificate holds
    // one group in the testbed: cluster-admin comes from a binding).
    fed.hub
        .write_kubeconfig_for_user(HUB_USER, &[testbed::AUDITED_GROUP], &hub_kubeconfig)
        .unwrap();
    bind_cluster_admin(&fed.hub, HUB_USER).await;
    start_hub(&mut fed, &hub_kubeconfig, &cfg.log_level);
    let addr = fed.metrics_addr.clone().unwrap();
    federator_e2e::wait_for("the hub's /readyz", Duration::from_secs(60), || async {
        readyz(&addr).await.then_some(())
    })
    .await;
    let hub_pid = fed.serve.as_ref().unwrap().pid();
    let hub_rss_empty = rss_mib(hub_pid);
    let recorder = Recorder::start(fed.hub.client().await.unwrap());

    let mut join_ms = Vec::new();
    let mut install_ms = Vec::new();
    let mut hub_rss_by_members = vec![(0usize, hub_rss_empty)];
    for (i, m) in names.iter().enumerate() {
        let t0 = Instant::now();
        fed.join(m);
        let t1 = Instant::now();
        fed.start_agent_with(m, &cfg.log_level);
        let c = fed.testbed.cluster(m).unwrap().clone();
        loop {
            if cacerts_valid(&c).await {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(60),
                "{m}: no cacerts after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t2 = Instant::now();
        join_ms.push(ms(t1 - t0));
        install_ms.push(ms(t2 - t1));
        hub_rss_by_members.push((i + 1, rss_mib(hub_pid)));
    }
    let onboarded = fed_start.elapsed();
    // Settled: every member acknowledged the current bundle.
    let generation = recorder.generation();
    recorder
        .all_acked(&names, generation, Duration::from_secs(120))
        .await;
    println!(
        "    federator: init {init_ms:.0} ms, {n} joins in {:.1}s (join p50 {:.0} ms, join→cacerts p50 {:.0} ms)",
        onboarded.as_secs_f64(),
        pct(&join_ms, 50.0),
        pct(&install_ms, 50.0)
    );

    // 3. Idle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let agent_pids: Vec<u32> = names
        .iter()
        .map(|m| fed.members[m].agent.as_ref().unwrap().pid())
        .collect();
    let marks = audit_marks(&fed);
    let hub_cpu0 = cpu_ticks(hub_pid);
    let agent_cpu0: Vec<u64> = agent_pids.iter().map(|p| cpu_ticks(*p)).collect();
    let t = Instant::now();
    tokio::time::sleep(cfg.idle).await;
    let idle_secs = t.elapsed().as_secs_f64();
    let tck = clock_ticks();
    let hub_cpu = (cpu_ticks(hub_pid) - hub_cpu0) as f64 / tck / idle_secs * 100.0;
    let agent_cpu: Vec<f64> = agent_pids
        .iter()
        .zip(&agent_cpu0)
        .map(|(p, c0)| (cpu_ticks(*p) - c0) as f64 / tck / idle_secs * 100.0)
        .collect();
    let hub_rss = rss_mib(hub_pid);
    let agent_rss: Vec<f64> = agent_pids.iter().map(|p| rss_mib(*p)).collect();
    let idle_requests = audit_since(&fed, &marks);
    let per_member_minute = |r: Option<&Requests>| {
        let r = r.cloned().unwrap_or_default();
        let f = |v: u64| v as f64 / n as f64 / (idle_secs / 60.0);
        json!({
            "watches": f(r.watches),
            "reads": f(r.reads),
            "writes": f(r.writes),
            "write_list": r.write_list,
        })
    };
    let hub_slope = slope(&hub_rss_by_members);
    println!(
        "    idle {idle_secs:.0}s: hub RSS {hub_rss:.1} MiB, CPU {hub_cpu:.2}%; agent RSS max {:.1} MiB, CPU max {:.2}%",
        pct(&agent_rss, 100.0),
        pct(&agent_cpu, 100.0)
    );

    // 4. Bundle changes: a new trust domain joins, then leaves.
    let mut change_join = Vec::new();
    let mut change_leave = Vec::new();
    let mut change_from_command = Vec::new();
    for k in 0..cfg.changes {
        fed.members.get_mut("extra").unwrap().trust_domain = format!("change{}.example", k + 1);
        let before = recorder.generation();
        let t0 = Instant::now();
        fed.join("extra");
        let (g, seen_at) = recorder
            .new_generation(before, Duration::from_secs(60))
            .await
            .expect("a new trust domain changes the bundle");
        let acked = recorder
            .all_acked(&names, g, Duration::from_secs(120))
            .await;
        change_join.push(ms(acked.saturating_duration_since(seen_at)));
        change_from_command.push(ms(acked.saturating_duration_since(t0)));
        let before = recorder.generation();
        fed.federator_ok(&["leave", "cluster", "extra"]);
        if let Some((g, seen_at)) = recorder
            .new_generation(before, Duration::from_secs(20))
            .await
        {
            let acked = recorder
                .all_acked(&names, g, Duration::from_secs(120))
                .await;
            change_leave.push(ms(acked.saturating_duration_since(seen_at)));
        }
    }
    println!(
        "    bundle change → all {n} acknowledged: p50 {:.0} ms, p99 {:.0} ms ({} changes; leave: {} changes, p50 {:.0} ms)",
        pct(&change_join, 50.0),
        pct(&change_join, 99.0),
        change_join.len(),
        change_leave.len(),
        pct(&change_leave, 50.0)
    );

    // 5. Root rotation of cluster.local.
    let rotated: Vec<String> = names.iter().take(10).cloned().collect();
    let phases_before = recorder.seen.lock().unwrap().phase_log.len();
    let t0 = Instant::now();
    let drain = format!("{}s", cfg.drain.as_secs());
    fed.federator_ok(&[
        "rotate-root",
        "--trust-domain",
        "cluster.local",
        "--drain",
        &drain,
    ]);
    let done = recorder
        .until("the rotation to finish", Duration::from_secs(300), |s| {
            s.phase_log[phases_before..]
                .iter()
                .find(|(_, td, p)| td == "cluster.local" && p == "done")
                .map(|(at, _, _)| *at)
        })
        .await;
    let phase_log: Vec<(f64, String)> = recorder.seen.lock().unwrap().phase_log[phases_before..]
        .iter()
        .filter(|(_, td, _)| td == "cluster.local")
        .map(|(at, _, p)| (ms(at.saturating_duration_since(t0)), p.clone()))
        .collect();
    let new_root = federator_e2e::root_of(&fed.federation_status().await, "cluster.local");
    let generation = recorder.generation();
    let settled = recorder
        .all_acked(&names, generation, Duration::from_secs(120))
        .await;
    recorder
        .until(
            "the rotated members on the new root",
            Duration::from_secs(120),
            |s| {
                rotated
                    .iter()
                    .all(|m| s.roots.get(m) == Some(&new_root))
                    .then_some(())
            },
        )
        .await;
    let rotation_total = done.max(settled).saturating_duration_since(t0);
    let rotation_ms = ms(rotation_total) - ms(cfg.drain);
    println!(
        "    rotation of cluster.local across {} members: {:.0} ms minus the {}s drain",
        rotated.len(),
        rotation_ms,
        cfg.drain.as_secs()
    );

    // 6. Hub kill and restart.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let marks = audit_marks(&fed);
    fed.serve.as_mut().unwrap().kill();
    let t0 = Instant::now();
    start_hub(&mut fed, &hub_kubeconfig, &cfg.log_level);
    let addr = fed.metrics_addr.clone().unwrap();
    federator_e2e::wait_for(
        "the restarted hub's /readyz",
        Duration::from_secs(120),
        || async { readyz(&addr).await.then_some(()) },
    )
    .await;
    let ready_ms = ms(t0.elapsed());
    federator_e2e::wait_for(
        "the restarted hub to report every member",
        Duration::from_secs(120),
        || async {
            let m = fed.hub_metrics().await?;
            names
                .iter()
                .all(|name| m.contains(&format!("federator_member_ready{{cluster=\"{name}\"}} 1")))
                .then_some(())
        },
    )
    .await;
    let synced_ms = ms(t0.elapsed());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let recovery = audit_since(&fed, &marks);
    let recovery_writes = recovery.get("hub").map(|r| r.writes).unwrap_or(0);
    let hub_rss_restarted = rss_mib(fed.serve.as_ref().unwrap().pid());
    println!(
        "    hub restart: ready {ready_ms:.0} ms, all {n} reported {synced_ms:.0} ms, {recovery_writes} writes"
    );
    drop(recorder);

    let result = json!({
        "n": n,
        "load_average_start": load_start,
        "testbed_start_s": testbed_secs,
        "apiserver_rss_mib_each": apiserver_rss,
        "diy": {
            "rsa4096_total_s": diy_rsa.as_secs_f64(),
            "rsa4096_per_cluster_ms": summary(&diy_rsa_each),
            "ecdsa_p256_total_s": diy_ec.as_secs_f64(),
            "ecdsa_p256_per_cluster_ms": summary(&diy_ec_each),
        },
        "federator": {
            "init_ms": init_ms,
            "onboard_total_s": onboarded.as_secs_f64(),
            "join_ms": summary(&join_ms),
            "join_to_cacerts_ms": summary(&install_ms),
            "ratio_vs_diy_rsa4096": onboarded.as_secs_f64() / diy_rsa.as_secs_f64(),
            "ratio_vs_diy_ecdsa_p256": onboarded.as_secs_f64() / diy_ec.as_secs_f64(),
        },
        "idle": {
            "window_s": idle_secs,
            "hub_rss_mib": hub_rss,
            "hub_rss_empty_mib": hub_rss_empty,
            "hub_rss_per_member_mib": hub_slope,
            "hub_rss_by_members": hub_rss_by_members,
            "hub_cpu_percent": hub_cpu,
            "agent_rss_mib": summary(&agent_rss),
            "agent_cpu_percent": summary(&agent_cpu),
            "hub_requests_per_member_minute": per_member_minute(idle_requests.get("hub")),
            "agent_requests_per_member_minute": per_member_minute(idle_requests.get("agent")),
        },
        "bundle_change_ack_ms": summary(&change_join),
        "bundle_change_ack_from_join_ms": summary(&change_from_command),
        "bundle_change_leave_ack_ms": summary(&change_leave),
        "rotation": {
            "members": rotated.len(),
            "drain_s": cfg.drain.as_secs(),
            "minus_drain_ms": rotation_ms,
            "phases_ms": phase_log,
        },
        "restart": {
            "ready_ms": ready_ms,
            "all_reported_ms": synced_ms,
            "writes": recovery_writes,
            "write_list": recovery.get("hub").map(|r| r.write_list.clone()).unwrap_or_default(),
            "hub_rss_mib_after": hub_rss_restarted,
        },
        "load_average_end": loadavg(),
    });
    // Dropping the Federation runs the secret-hygiene scan and stops every process.
    drop(fed);
    result
}

/// Least-squares slope of `y` against `x`.
fn slope(points: &[(usize, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0 as f64).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 as f64 - mx) * (p.1 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 as f64 - mx).powi(2)).sum();
    num / den
}

// ---------------------------------------------------------------------------------------------
// Output.

fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => v.to_string(),
    }
}

fn table(runs: &[Value]) -> String {
    let rows: &[(&str, &str)] = &[
        ("DIY RSA-4096, all clusters (s)", "/diy/rsa4096_total_s"),
        (
            "DIY ECDSA P-256, all clusters (s)",
            "/diy/ecdsa_p256_total_s",
        ),
        (
            "federator init + all joins (s)",
            "/federator/onboard_total_s",
        ),
        (
            "  ratio federator / DIY RSA-4096",
            "/federator/ratio_vs_diy_rsa4096",
        ),
        (
            "  ratio federator / DIY P-256",
            "/federator/ratio_vs_diy_ecdsa_p256",
        ),
        ("join wall p50 (ms)", "/federator/join_ms/p50"),
        ("join wall p95 (ms)", "/federator/join_ms/p95"),
        ("join wall max (ms)", "/federator/join_ms/max"),
        (
            "join → cacerts p50 (ms)",
            "/federator/join_to_cacerts_ms/p50",
        ),
        (
            "join → cacerts p95 (ms)",
            "/federator/join_to_cacerts_ms/p95",
        ),
        (
            "join → cacerts max (ms)",
            "/federator/join_to_cacerts_ms/max",
        ),
        (
            "bundle change → all acked p50 (ms)",
            "/bundle_change_ack_ms/p50",
        ),
        (
            "bundle change → all acked p99 (ms)",
            "/bundle_change_ack_ms/p99",
        ),
        ("rotation minus drain (ms)", "/rotation/minus_drain_ms"),
        ("hub RSS idle (MiB)", "/idle/hub_rss_mib"),
        ("hub RSS per member (MiB)", "/idle/hub_rss_per_member_mib"),
        ("hub CPU idle (%)", "/idle/hub_cpu_percent"),
        ("agent RSS idle max (MiB)", "/idle/agent_rss_mib/max"),
        ("agent CPU idle max (%)", "/idle/agent_cpu_percent/max"),
        (
            "hub watches /member/min",
            "/idle/hub_requests_per_member_minute/watches",
        ),
        (
            "hub reads /member/min",
            "/idle/hub_requests_per_member_minute/reads",
        ),
        (
            "hub writes /member/min",
            "/idle/hub_requests_per_member_minute/writes",
        ),
        (
            "agent watches /member/min",
            "/idle/agent_requests_per_member_minute/watches",
        ),
        (
            "agent reads /member/min",
            "/idle/agent_requests_per_member_minute/reads",
        ),
        (
            "agent writes /member/min",
            "/idle/agent_requests_per_member_minute/writes",
        ),
        ("restart → /readyz (ms)", "/restart/ready_ms"),
        (
            "restart → all members reported (ms)",
            "/restart/all_reported_ms",
        ),
        ("restart: hub writes", "/restart/writes"),
        ("apiserver RSS each (MiB)", "/apiserver_rss_mib_each"),
        ("load average at start", "/load_average_start"),
        ("load average at end", "/load_average_end"),
    ];
    let mut out = format!("{:<38}", "N");
    for r in runs {
        out += &format!("{:>22}", r["n"].to_string());
    }
    out.push('\n');
    for (label, ptr) in rows {
        out += &format!("{label:<38}");
        for r in runs {
            let v = r.pointer(ptr).cloned().unwrap_or(Value::Null);
            let s = match &v {
                Value::String(s) => s.clone(),
                _ => f(&v),
            };
            out += &format!("{s:>22}");
        }
        out.push('\n');
    }
    out
}

/// A panel of the plot: caption, unit, and (label, JSON pointer) per line.
type Panel = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Four panels of cost against N. Text needs a TTF font (Debian: fonts-dejavu-core).
fn plot(runs: &[Value], title: &str, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let font = std::fs::read(FONT)
        .map_err(|e| format!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| "the font does not load".to_owned())?;
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((2, 2));
    let xs: Vec<f64> = runs
        .iter()
        .map(|r| r["n"].as_f64().unwrap_or(0.0))
        .collect();
    let xmax = xs.iter().cloned().fold(1.0, f64::max) * 1.05;
    let series = |ptr: &str| -> Vec<(f64, f64)> {
        runs.iter()
            .zip(&xs)
            .filter_map(|(r, x)| Some((*x, r.pointer(ptr)?.as_f64()?)))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let specs: [Panel; 4] = [
        (
            "onboarding: all N clusters with valid cacerts",
            "seconds",
            vec![
                ("federator init + joins", "/federator/onboard_total_s"),
                ("DIY tools/certs RSA-4096 + kubectl", "/diy/rsa4096_total_s"),
                ("DIY tools/certs P-256 + kubectl", "/diy/ecdsa_p256_total_s"),
            ],
        ),
        (
            "latency",
            "milliseconds",
            vec![
                ("join → cacerts p50", "/federator/join_to_cacerts_ms/p50"),
                ("join → cacerts p95", "/federator/join_to_cacerts_ms/p95"),
                ("bundle change → all acked p50", "/bundle_change_ack_ms/p50"),
                ("bundle change → all acked p99", "/bundle_change_ack_ms/p99"),
            ],
        ),
        (
            "memory at idle",
            "MiB",
            vec![
                ("hub RSS", "/idle/hub_rss_mib"),
                ("agent RSS (max)", "/idle/agent_rss_mib/max"),
            ],
        ),
        (
            "API requests at idle, per member per minute",
            "requests",
            vec![
                ("hub reads", "/idle/hub_requests_per_member_minute/reads"),
                (
                    "hub watches",
                    "/idle/hub_requests_per_member_minute/watches",
                ),
                ("hub writes", "/idle/hub_requests_per_member_minute/writes"),
                (
                    "agent reads",
                    "/idle/agent_requests_per_member_minute/reads",
                ),
                (
                    "agent watches",
                    "/idle/agent_requests_per_member_minute/watches",
                ),
                (
                    "agent writes",
                    "/idle/agent_requests_per_member_minute/writes",
                ),
            ],
        ),
    ];
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (area, (caption, unit, lines)) in panels.iter().zip(specs) {
        let data: Vec<Vec<(f64, f64)>> = lines.iter().map(|(_, p)| series(p)).collect();
        let ymax = data
            .iter()
            .flatten()
            .map(|p| p.1)
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("clusters (N)")
            .y_desc(unit)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, ((label, _), pts)) in lines.iter().zip(data).enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cfg = config();
    let machine = machine();
    println!(
        "fleet benchmark: N = {:?}, idle window {}s, {} bundle changes, {} CPU(s), load {}",
        cfg.ns,
        cfg.idle.as_secs(),
        cfg.changes,
        machine["cpus"],
        loadavg()
    );
    println!("apiserver flags added: {}", cfg.apiserver_args.join(" "));
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for n in cfg.ns.clone() {
        // A fleet that fails (e.g. out of memory at a large N) is reported, and the others
        // still are: its Federation drops (stopping its processes) as the task unwinds.
        let c = cfg.clone();
        match tokio::spawn(async move { run_fleet(n, &c).await }).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("N = {n} failed: {e}");
                failed.push(json!({"n": n, "error": e.to_string()}));
            }
        }
        write_outputs(&cfg, &machine, &runs, &failed);
    }
}

fn write_outputs(cfg: &Config, machine: &Value, runs: &[Value], failed: &[Value]) {
    // Hub RSS increment per member across the runs (idle RSS against N).
    let across: Vec<(usize, f64)> = runs
        .iter()
        .map(|r| {
            (
                r["n"].as_u64().unwrap_or(0) as usize,
                r["idle"]["hub_rss_mib"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let report = json!({
        "machine": machine,
        "apiserver_args": cfg.apiserver_args,
        "idle_window_s": cfg.idle.as_secs(),
        "bundle_changes": cfg.changes,
        "hub_rss_per_member_mib_across_runs": slope(&across),
        "runs": runs,
        "failed": failed,
    });
    let text = table(runs);
    let header = format!(
        "fleet benchmark, {} ({} CPUs, {}), {} build, commit {}, {}\n",
        machine["cpu"].as_str().unwrap_or(""),
        machine["cpus"],
        machine["memory"].as_str().unwrap_or(""),
        machine["profile"].as_str().unwrap_or(""),
        machine["commit"].as_str().unwrap_or(""),
        machine["date"].as_str().unwrap_or("")
    );
    println!("\n{header}{text}");
    println!("hub RSS per member across runs: {:.3} MiB", slope(&across));
    std::fs::create_dir_all(&cfg.out).unwrap();
    std::fs::write(
        cfg.out.join("fleet.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    std::fs::write(cfg.out.join("fleet.txt"), format!("{header}{text}")).unwrap();
    let title = format!(
        "federator fleet benchmark — {} CPUs, {} — {}",
        machine["cpus"],
        machine["commit"].as_str().unwrap_or(""),
        machine["date"].as_str().unwrap_or("")
    );
    match plot(runs, &title, &cfg.out.join("fleet.png")) {
        Ok(()) => println!("wrote {}", cfg.out.join("fleet.png").display()),
        Err(e) => eprintln!("no plot: {e}"),
    }
    println!(
        "wrote {} and fleet.txt",
        cfg.out.join("fleet.json").display()
    );
}
