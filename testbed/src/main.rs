//! `testbed`: start, inspect and stop real multi-cluster control planes on loopback.
//!
//! ```text
//! testbed up --clusters 3 --dir /tmp/tb [--bao] [--istiod [--trust-domain TD] [--istiod-version V]] [--detach]
//! testbed status --dir /tmp/tb
//! testbed down --dir /tmp/tb
//! testbed bao --dir /tmp/tb [--detach]
//! ```
//!
//! `up` and `bao` stay in the foreground until Ctrl-C or SIGTERM (their children die with
//! them); `--detach` runs the same command in the background, logging to `DIR/testbed.log`
//! (or `DIR/bao/bao-owner.log`), and returns once everything is ready.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use testbed::state::{BAO_STATE_FILE, BaoInfo, STATE_FILE, State};
use testbed::{Bao, Binaries, Testbed, TestbedOptions};

#[derive(Parser)]
#[command(
    name = "testbed",
    about = "Real multi-cluster Kubernetes control planes on loopback",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start etcd and N kube-apiservers (and optionally OpenBao) in DIR.
    Up(UpArgs),
    /// Show what runs in DIR.
    Status {
        #[arg(long)]
        dir: PathBuf,
        /// Print the state file as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop everything that runs in DIR.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Build the project's OCI image archives (cluster-agent, federator) from its binaries,
    /// without Docker: what `scripts/images` runs.
    Images {
        /// Directory holding the cluster-agent and federator binaries (e.g. target/release).
        #[arg(long)]
        bin_dir: PathBuf,
        /// Where to write the archives.
        #[arg(long, default_value = "target/images")]
        out: PathBuf,
    },
    /// Start an OpenBao dev server for DIR (address in DIR/bao/addr, root token in DIR/bao/token).
    Bao {
        #[arg(long)]
        dir: PathBuf,
        /// Return once it is ready and keep it running in the background.
        #[arg(long)]
        detach: bool,
        /// Directory holding the binaries (default: $FEDERATOR_BIN_DIR or ~/.cache/federator/bin).
        #[arg(long, env = "FEDERATOR_BIN_DIR")]
        bin_dir: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
struct UpArgs {
    /// Number of clusters, named cluster-1 .. cluster-N.
    #[arg(long, default_value_t = 1, conflicts_with = "names")]
    clusters: usize,
    /// Comma-separated cluster names instead of cluster-1..N.
    #[arg(long, value_delimiter = ',')]
    names: Vec<String>,
    /// Directory for certificates, kubeconfigs, logs and etcd data.
    #[arg(long)]
    dir: PathBuf,
    /// Also start an OpenBao dev server.
    #[arg(long)]
    bao: bool,
    /// Give clusters a real node (containerd, kubelet, scheduler, controller-manager): all of
    /// them with a bare `--nodes`, or the listed ones. Needs `tools/build.sh nodes`.
    #[arg(long, num_args = 0..=1, default_missing_value = "all", value_delimiter = ',')]
    nodes: Option<Vec<String>>,
    /// Images the nodes import: `project` (cluster-agent and federator, built from the
    /// binaries next to this one), `none`, or comma-separated image archives.
    #[arg(long, default_value = "project", requires = "nodes")]
    node_images: String,
    /// The kubelets' syncFrequency in seconds (default: the kubelet's, 60).
    #[arg(long, requires = "nodes")]
    kubelet_sync_seconds: Option<u64>,
    /// Also start istiod (pilot-discovery) in every cluster (as a Pod where there is a node);
    /// needs `tools/build.sh istiod`.
    #[arg(long)]
    istiod: bool,
    /// The trust domain of every cluster's mesh config (with --istiod).
    #[arg(long, default_value = "cluster.local", requires = "istiod")]
    trust_domain: String,
    /// The istiod version (with --istiod), one of those tools/build.sh declares.
    #[arg(long, default_value = testbed::ISTIO_VERSION, requires = "istiod")]
    istiod_version: String,
    /// Return once ready and keep the testbed running in the background.
    #[arg(long)]
    detach: bool,
    /// Directory holding the binaries (default: $FEDERATOR_BIN_DIR or ~/.cache/federator/bin).
    #[arg(long, env = "FEDERATOR_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

impl UpArgs {
    fn node_names(&self) -> Vec<String> {
        match &self.nodes {
            None => Vec::new(),
            Some(list) if list.iter().any(|n| n == "all") => self.names(),
            Some(list) => list.clone(),
        }
    }

    fn node_images(&self) -> testbed::NodeImages {
        match self.node_images.as_str() {
            "project" => testbed::NodeImages::Project,
            "none" => testbed::NodeImages::None,
            list => testbed::NodeImages::Archives(list.split(',').map(PathBuf::from).collect()),
        }
    }

    fn names(&self) -> Vec<String> {
        if self.names.is_empty() {
            (1..=self.clusters)
                .map(|i| format!("cluster-{i}"))
                .collect()
        } else {
            self.names.clone()
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("testbed=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match Cli::parse().command {
        Cmd::Up(args) => up(args).await,
        Cmd::Status { dir, json } => status(&dir, json).await,
        Cmd::Down { dir } => down(&dir).await,
        Cmd::Images { bin_dir, out } => images(&bin_dir, &out),
        Cmd::Bao {
            dir,
            detach,
            bin_dir,
        } => bao(&dir, detach, bin_dir).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn up(args: UpArgs) -> Result<()> {
    let dir = &args.dir;
    if let Some(s) = State::read(dir, STATE_FILE)?
        && s.owner_alive()
    {
        let running: Vec<&str> = s.clusters.iter().map(|c| c.name.as_str()).collect();
        let wanted = args.names();
        let nodes: Vec<String> = s.nodes.iter().map(|n| n.cluster.clone()).collect();
        if running == wanted.iter().map(String::as_str).collect::<Vec<_>>()
            && (!args.bao || s.bao.is_some())
            && nodes == args.node_names()
        {
            println!(
                "reusing the testbed already running in {} (owner pid {})",
                dir.display(),
                s.owner_pid
            );
            print_summary(&s);
            return Ok(());
        }
        bail!(
            "{} already runs a testbed (owner pid {}) with clusters {:?}{}; \
             stop it with `testbed down --dir {}` or use another --dir",
            dir.display(),
            s.owner_pid,
            running,
            if s.bao.is_some() { " and OpenBao" } else { "" },
            dir.display()
        );
    }
    if args.detach {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("up")
            .arg("--dir")
            .arg(dir)
            .arg("--names")
            .arg(args.names().join(","));
        if args.bao {
            cmd.arg("--bao");
        }
        let nodes = args.node_names();
        if !nodes.is_empty() {
            cmd.arg(format!("--nodes={}", nodes.join(",")))
                .arg("--node-images")
                .arg(&args.node_images);
            if let Some(s) = args.kubelet_sync_seconds {
                cmd.arg("--kubelet-sync-seconds").arg(s.to_string());
            }
        }
        if args.istiod {
            cmd.arg("--istiod")
                .arg("--trust-domain")
                .arg(&args.trust_domain)
                .arg("--istiod-version")
                .arg(&args.istiod_version);
        }
        if let Some(b) = &args.bin_dir {
            cmd.arg("--bin-dir").arg(b);
        }
        let expect: Vec<String> = if args.istiod {
            // istiod processes; istiod Pods (node clusters) are not processes of the testbed.
            args.names()
                .iter()
                .filter(|n| !nodes.contains(n))
                .map(|n| format!("{n}/istiod"))
                .collect()
        } else {
            Vec::new()
        };
        let state =
            detach_and_wait(cmd, &dir.join("testbed.log"), dir, STATE_FILE, &expect).await?;
        print_summary(&state);
        return Ok(());
    }

    let started = Instant::now();
    let mut opts = TestbedOptions::named(args.names())
        .dir(dir)
        .with_nodes_in(args.node_names())
        .node_images(args.node_images());
    opts.bao = args.bao;
    opts.bin_dir = args.bin_dir.clone();
    if let Some(s) = args.kubelet_sync_seconds {
        opts = opts.kubelet_sync_frequency(Duration::from_secs(s));
    }
    let tb = Testbed::start(opts).await?;
    for n in tb.nodes() {
        println!(
            "{}	node {}	ready in {:.1}s	bridge {} {}	logs {}",
            n.cluster().name(),
            n.name(),
            n.ready_in().as_secs_f64(),
            n.network().bridge,
            n.network().subnet(),
            n.dir().display()
        );
    }
    if args.istiod {
        let names = args.names();
        let nodes = args.node_names();
        let pods = names.iter().filter(|n| nodes.contains(n)).map(|n| {
            let opts = testbed::IstiodOptions::new(args.trust_domain.clone())
                .version(args.istiod_version.clone());
            tb.start_istiod_pod(n, opts)
        });
        for pod in futures::future::try_join_all(pods).await? {
            let current = pod.current_pod().await?;
            println!(
                "{}	istiod Pod {}	IP {}	ready in {:.1}s",
                pod.cluster_name(),
                current.name,
                current.ip.map(|i| i.to_string()).unwrap_or_default(),
                pod.started_in().as_secs_f64()
            );
        }
        let starts = names.iter().filter(|n| !nodes.contains(n)).map(|n| {
            let opts = testbed::IstiodOptions::new(args.trust_domain.clone())
                .version(args.istiod_version.clone());
            tb.start_istiod(n, opts)
        });
        for istiod in futures::future::try_join_all(starts).await? {
            println!(
                "{}	istiod pid {}	secure gRPC {}	log {}",
                istiod.cluster_name(),
                istiod.pid().unwrap_or(0),
                istiod
                    .secure_grpc_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                istiod.log_path().display()
            );
        }
    }
    println!(
        "testbed up in {:.1}s (owner pid {}); Ctrl-C or `testbed down --dir {}` stops it",
        started.elapsed().as_secs_f64(),
        std::process::id(),
        dir.display()
    );
    print_summary(&tb.state());
    wait_for_signal().await?;
    eprintln!("stopping the testbed");
    tb.down().await;
    Ok(())
}

fn images(bin_dir: &Path, out: &Path) -> Result<()> {
    let t = Instant::now();
    for a in testbed::image::project_images(bin_dir, out)? {
        println!(
            "{}	{}	{}	{} MiB",
            a.name,
            a.path.display(),
            a.digest,
            a.size / (1024 * 1024)
        );
    }
    eprintln!("images built in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

async fn bao(dir: &Path, detach: bool, bin_dir: Option<PathBuf>) -> Result<()> {
    for file in [STATE_FILE, BAO_STATE_FILE] {
        if let Some(s) = State::read(dir, file)?
            && s.owner_alive()
            && s.bao.is_some()
        {
            println!(
                "OpenBao already runs for {} (owner pid {})",
                dir.display(),
                s.owner_pid
            );
            print_summary(&s);
            return Ok(());
        }
    }
    let bao_dir = dir.join("bao");
    std::fs::create_dir_all(&bao_dir).with_context(|| format!("create {}", bao_dir.display()))?;
    if detach {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("bao").arg("--dir").arg(dir);
        if let Some(b) = &bin_dir {
            cmd.arg("--bin-dir").arg(b);
        }
        let state = detach_and_wait(
            cmd,
            &bao_dir.join("bao-owner.log"),
            dir,
            BAO_STATE_FILE,
            &[],
        )
        .await?;
        print_summary(&state);
        return Ok(());
    }
    let binaries = bin_dir
        .map(Binaries::in_dir)
        .unwrap_or_else(Binaries::locate);
    let bin = binaries.bao()?;
    let bao = Bao::start(&bin, &bao_dir).await?;
    let mut state = State::owned_by_me();
    state.ready = true;
    state.bao = Some(BaoInfo {
        addr: bao.addr().to_owned(),
        token_file: bao_dir.join("token"),
    });
    if let Some(pid) = bao.pid() {
        state.processes.push(testbed::state::ProcessInfo {
            name: "bao".into(),
            pid,
            exe: std::fs::canonicalize(&bin).unwrap_or(bin),
        });
    }
    state.write(dir, BAO_STATE_FILE)?;
    print_summary(&state);
    wait_for_signal().await?;
    bao.stop().await;
    let _ = std::fs::remove_file(dir.join(BAO_STATE_FILE));
    Ok(())
}

/// Runs `cmd` in its own session-less process group, in the background, logging to `log`,
/// and waits until it wrote a ready state file listing the processes named in `expect`.
async fn detach_and_wait(
    mut cmd: Command,
    log: &Path,
    dir: &Path,
    state_file: &str,
    expect: &[String],
) -> Result<State> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    // Its own process group: a Ctrl-C in this terminal does not reach it.
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    let mut child = cmd.spawn().context("start the background testbed")?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the background testbed exited ({status}); its log {}:\n{}",
                log.display(),
                tail(log)
            );
        }
        if let Ok(Some(s)) = State::read(dir, state_file)
            && s.owner_pid == pid
            && s.ready
            && expect
                .iter()
                .all(|name| s.processes.iter().any(|p| &p.name == name))
        {
            println!(
                "running in the background (owner pid {pid}, log {})",
                log.display()
            );
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!(
                "the background testbed is not ready after 600s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn print_summary(s: &State) {
    for c in &s.clusters {
        println!(
            "{}\t{}\tKUBECONFIG={}",
            c.name,
            c.server,
            c.kubeconfig.display()
        );
    }
    print_servers_from(s);
    if let Some(b) = &s.bao {
        println!("bao\t{}\ttoken file {}", b.addr, b.token_file.display());
    }
}

/// Where Pods on each node reach each apiserver (the same URLs work from the host).
fn print_servers_from(s: &State) {
    for c in &s.clusters {
        for (node, url) in &c.servers_from {
            println!("{}\tfrom {node}'s node\t{url}", c.name);
        }
    }
}

async fn status(dir: &Path, json: bool) -> Result<()> {
    let mut any = false;
    for file in [STATE_FILE, BAO_STATE_FILE] {
        let Some(s) = State::read(dir, file)? else {
            continue;
        };
        any = true;
        if json {
            println!("{}", serde_json::to_string_pretty(&s)?);
            continue;
        }
        let owner = if s.owner_alive() {
            "running"
        } else {
            "DEAD (run `testbed down` to clean up)"
        };
        println!(
            "{}: owner pid {} {owner}",
            dir.join(file).display(),
            s.owner_pid
        );
        if let Some(url) = &s.etcd_url {
            println!("etcd\t{url}");
        }
        for n in &s.nodes {
            println!(
                "{}\tnode {}-node\tbridge {} {}\tcgroups /{}",
                n.cluster,
                n.cluster,
                n.network.bridge,
                n.network.subnet(),
                n.cgroup
            );
        }
        for c in &s.clusters {
            let ready = match testbed::cluster::client_from_file(&c.kubeconfig).await {
                Ok(client) => {
                    if tokio::time::timeout(
                        Duration::from_secs(5),
                        testbed::cluster::readyz(client),
                    )
                    .await
                    .unwrap_or(false)
                    {
                        "ready"
                    } else {
                        "NOT READY"
                    }
                }
                Err(_) => "NO KUBECONFIG",
            };
            println!(
                "{}\t{}\t{ready}\tKUBECONFIG={}",
                c.name,
                c.server,
                c.kubeconfig.display()
            );
        }
        print_servers_from(&s);
        if let Some(b) = &s.bao {
            let host = b.addr.trim_start_matches("http://");
            let health = match testbed::http::get(host, "/v1/sys/health", None).await {
                Ok(r) if r.status == 200 => "ready".to_owned(),
                Ok(r) => format!("status {}", r.status),
                Err(_) => "NOT REACHABLE".to_owned(),
            };
            println!(
                "bao\t{}\t{health}\ttoken file {}",
                b.addr,
                b.token_file.display()
            );
        }
        for p in &s.processes {
            let alive = if p.is_alive() { "alive" } else { "gone" };
            let rss = testbed::process::rss_kib(p.pid)
                .filter(|_| p.is_alive())
                .map(|k| format!("{} MiB", k / 1024))
                .unwrap_or_default();
            println!("  pid {}\t{}\t{alive}\t{rss}", p.pid, p.name);
        }
    }
    if !any {
        println!("no testbed in {}", dir.display());
    }
    Ok(())
}

async fn down(dir: &Path) -> Result<()> {
    let mut any = false;
    for file in [BAO_STATE_FILE, STATE_FILE] {
        let Some(s) = State::read(dir, file)? else {
            continue;
        };
        any = true;
        if s.owner_alive() && s.owner_pid != std::process::id() {
            // The owner stops its children in order and removes its state file.
            if let Some(pid) = i32::try_from(s.owner_pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while s.owner_alive() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!("stopped owner pid {}", s.owner_pid);
        }
        let killed = s.kill_all(Duration::from_secs(10)).await;
        if !killed.is_empty() {
            println!("killed leftovers: {}", killed.join(", "));
        }
        let path = dir.join(file);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
        }
    }
    if any {
        println!("testbed in {} is down (files kept)", dir.display());
    } else {
        println!("no testbed in {}", dir.display());
    }
    Ok(())
}
