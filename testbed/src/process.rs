//! Generic supervision of one child process (etcd, kube-apiserver, bao, and later istiod).
//!
//! Each child:
//! - runs in **its own process group** (`process_group(0)`, so its pid is its group id). Every
//!   signal the testbed sends goes to the whole group, so anything the child forks dies with it,
//!   and a Ctrl-C in the terminal reaches only the testbed, which then cleans up in order;
//! - is started through `setpriv --pdeathsig KILL --` (util-linux), which sets the Linux
//!   **parent-death signal** and then `exec`s the real binary (same pid, no extra process). The
//!   kernel sends SIGKILL to the child when the thread that forked it dies, which covers the
//!   owner being SIGKILLed, aborting (`panic = "abort"`) or crashing, where no destructor runs.
//!   Because the signal fires on the death of the forking *thread*, not the process, every child
//!   is forked by one dedicated spawner thread that lives as long as the process (a tokio worker
//!   or a test thread may end long before the testbed does);
//! - is killed (SIGKILL to the group, then reaped) when its [`Process`] is dropped, which covers
//!   normal ends of tests, `?`-returns and panics that unwind;
//! - logs stdout and stderr to one file.
//!
//! The workspace forbids `unsafe` (and `forbid` cannot be relaxed per module), so
//! `CommandExt::pre_exec` with `prctl(PR_SET_PDEATHSIG)` is not available; `setpriv` is the
//! safe equivalent. `testbed down` (another shell) uses the pids in the state file instead, see
//! [`crate::state`].

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::{Error, Result};

/// What to run: enough to start the same process again after a stop.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Name used in logs and errors, e.g. `cluster-1/kube-apiserver`.
    pub name: String,
    /// The binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables (the rest is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory, if not the current one.
    pub cwd: Option<PathBuf>,
    /// File receiving stdout and stderr (appended to, so restarts keep earlier output).
    pub log: PathBuf,
}

impl ProcessSpec {
    /// A spec with no arguments, logging to `log`.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
    ) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            log: log.into(),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running child process in its own process group; killed (with its group) on drop.
#[derive(Debug)]
pub struct Process {
    spec: ProcessSpec,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Starts the process (see the module docs for how it is tied to this process's life).
    pub fn spawn(spec: ProcessSpec) -> Result<Self> {
        let setpriv = setpriv()?;
        // 0600: logs may hold secrets (OpenBao's dev mode prints its root token and unseal key).
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&spec.log)
            .map_err(Error::io("open log", &spec.log))?;
        let log2 = log.try_clone().map_err(Error::io("open log", &spec.log))?;
        let mut cmd = Command::new(setpriv);
        cmd.arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = spawn_on_spawner_thread(cmd).map_err(|source| Error::Process {
            name: spec.name.clone(),
            source,
        })?;
        tracing::debug!(name = %spec.name, pid = child.id(), "started");
        Ok(Self {
            spec,
            child,
            exited: None,
        })
    }

    /// The spec it was started from.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its pid, which is also its process-group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// The exit status if it has exited (reaping it), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log, lines)
    }

    /// Sends `signal` to its whole process group.
    fn signal_group(&mut self, signal: Signal) {
        if self.exit_status().is_some() {
            return;
        }
        signal_group(self.pid(), signal);
    }

    /// Freezes the whole group (SIGSTOP): the server keeps its sockets but answers nothing.
    pub fn pause(&mut self) {
        self.signal_group(Signal::STOP);
    }

    /// Resumes a paused group (SIGCONT).
    pub fn resume(&mut self) {
        self.signal_group(Signal::CONT);
    }

    /// Kills the whole group at once (SIGKILL) and reaps the child.
    pub fn kill(&mut self) {
        if self.exit_status().is_some() {
            // The leader is gone; something it forked may still hold the group.
            signal_group(self.pid(), Signal::KILL);
            return;
        }
        signal_group(self.pid(), Signal::KILL);
        match self.child.wait() {
            Ok(status) => self.exited = Some(status),
            Err(e) => tracing::warn!(name = %self.spec.name, error = %e, "wait after kill"),
        }
        tracing::debug!(name = %self.spec.name, "killed");
    }

    /// Asks the group to stop (SIGTERM), waits up to `grace`, then kills it.
    pub async fn terminate(&mut self, grace: Duration) {
        self.signal_group(Signal::CONT);
        self.signal_group(Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }
}

/// A supervised process that can be stopped and started again, shared by the clones of a
/// handle (a cluster's apiserver, the OpenBao server).
#[derive(Debug, Default)]
pub struct Slot(std::sync::Mutex<Option<Process>>);

impl Slot {
    /// A slot holding a running process.
    pub fn new(p: Process) -> Self {
        Self(std::sync::Mutex::new(Some(p)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Process>> {
        // A panic while holding this lock cannot leave the Option inconsistent; keep going.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process id, while there is a process.
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Process::pid)
    }

    /// Whether the process is alive.
    pub fn is_running(&self) -> bool {
        self.lock().as_mut().is_some_and(Process::is_running)
    }

    /// Puts a (new) process in the slot.
    pub fn put(&self, p: Process) {
        *self.lock() = Some(p);
    }

    /// Stops the process (SIGTERM, SIGKILL after `grace`); returns whether there was one.
    pub async fn stop(&self, grace: Duration) -> bool {
        let p = self.lock().take();
        match p {
            Some(mut p) => {
                p.terminate(grace).await;
                true
            }
            None => false,
        }
    }

    /// Freezes the process (SIGSTOP), keeping its state.
    pub fn pause(&self) {
        if let Some(p) = self.lock().as_mut() {
            p.pause();
        }
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        if let Some(p) = self.lock().as_mut() {
            p.resume();
        }
    }

    /// Kills the process now.
    pub fn kill(&self) {
        if let Some(mut p) = self.lock().take() {
            p.kill();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` to process group `pgid`, ignoring "no such process".
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    // kill(-1) would signal every process we may signal; and never signal our own group.
    if pgid <= 1 || Some(pgid) == own_pgid() {
        return;
    }
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return;
    };
    match rustix::process::kill_process_group(pid, signal) {
        Ok(()) => {}
        Err(rustix::io::Errno::SRCH) => {}
        Err(e) => tracing::warn!(pgid, ?signal, error = %e, "signal process group"),
    }
}

fn own_pgid() -> Option<u32> {
    u32::try_from(rustix::process::getpgrp().as_raw_nonzero().get()).ok()
}

/// The last `lines` lines of a file (reading at most its last 64 KiB).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn setpriv() -> Result<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
                .map(|d| d.join("setpriv"))
                .find(|p| p.is_file())
        })
        .as_deref()
        .ok_or(Error::MissingSetpriv)
}

type SpawnJob = (Command, mpsc::SyncSender<std::io::Result<Child>>);

/// Forks `cmd` on the one long-lived spawner thread, so the children's parent-death signal
/// fires when this *process* dies and not when some short-lived thread ends.
fn spawn_on_spawner_thread(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let spawned = std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                // Runs until the process exits: the sender lives in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the spawner thread");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let gone = || std::io::Error::other("testbed spawner thread is gone");
    sender
        .lock()
        .map_err(|_| gone())?
        .send((cmd, reply_tx))
        .map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}

/// Picks a currently free loopback port for a server a test is about to start.
///
/// Ports come from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, read,
/// never changed): port 0 would hand out an ephemeral port, and every outgoing connection on
/// the machine (kube clients, curl, a sibling test) takes its local port from that same range,
/// so a port picked there could be taken by a client socket before the server binds it (seen in
/// CI: the controller-manager's `--secure-port`). Below the range only servers bind. A port is
/// handed out at most once per process, and only if binding it (on every address) works now;
/// another process can still bind it first, so callers that can retry do (see
/// [`is_port_conflict`]).
pub fn pick_port() -> Result<u16> {
    let (low, high) = server_port_range();
    let span = u64::from(high - low) + 1;
    for _ in 0..PICK_ATTEMPTS {
        // `high - low` fits in u16, so the offset does too.
        let port = low + (random_u64() % span) as u16;
        if claim(port) {
            return Ok(port);
        }
    }
    Err(Error::PortsExhausted {
        name: format!("picking a free port in {low}..={high}"),
        attempts: PICK_ATTEMPTS,
    })
}

const PICK_ATTEMPTS: u32 = 200;

/// Records `port` as handed out if it was not already and binding it on every address works.
fn claim(port: u16) -> bool {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    if given.contains(&port) || std::net::TcpListener::bind(("0.0.0.0", port)).is_err() {
        return false;
    }
    given.push(port);
    true
}

/// The ports [`pick_port`] draws from: 10000 up to the start of the ephemeral range (or
/// 10000..=32767 when the range cannot be read or leaves too little room below it).
fn server_port_range() -> (u16, u16) {
    const LOW: u16 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok());
    match ephemeral_start {
        Some(start) if start > LOW + 1_000 => (LOW, start - 1),
        _ => (LOW, 32_767),
    }
}

/// A random number from the standard library's per-process random hash keys (no RNG crate
/// needed for picking ports).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish()
}

/// Picks a port `p` such that `p` and `p + 1` are free right now (OpenBao's dev server takes
/// its cluster port at `p + 1`).
pub fn pick_port_pair() -> Result<u16> {
    for _ in 0..50 {
        let p = pick_port()?;
        if p < u16::MAX && claim(p + 1) {
            return Ok(p);
        }
    }
    Err(Error::PortsExhausted {
        name: "port pair".into(),
        attempts: 50,
    })
}

/// Whether a start failure was a port someone else holds.
pub fn is_port_conflict(err: &Error) -> bool {
    match err {
        Error::ExitedEarly { tail, .. } | Error::NotReady { tail, .. } => {
            tail.contains("address already in use")
        }
        _ => false,
    }
}

/// Spawns `spec` and polls `ready` every 100 ms until it returns true, the process exits, or
/// `timeout` passes.
pub(crate) async fn spawn_until_ready<F, Fut>(
    spec: ProcessSpec,
    timeout: Duration,
    mut ready: F,
) -> Result<Process>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut process = Process::spawn(spec)?;
    let start = Instant::now();
    loop {
        if let Some(status) = process.exit_status() {
            return Err(Error::ExitedEarly {
                name: process.name().to_owned(),
                status: status.to_string(),
                log: process.log_path().to_owned(),
                tail: process.log_tail(30),
            });
        }
        // A probe that hangs (e.g. someone else's server holds the port and never answers)
        // must not delay noticing that our process exited.
        if tokio::time::timeout(Duration::from_secs(3), ready()).await == Ok(true) {
            tracing::debug!(name = %process.name(), ms = start.elapsed().as_millis() as u64, "ready");
            return Ok(process);
        }
        if start.elapsed() > timeout {
            let err = Error::NotReady {
                name: process.name().to_owned(),
                secs: timeout.as_secs(),
                log: process.log_path().to_owned(),
                tail: process.log_tail(30),
            };
            return Err(err);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 (after the parenthesised command) is the state; Z is a zombie.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The executable path of `pid`, if readable. A binary replaced on disk since the process
/// started (e.g. rebuilt by cargo) still counts as its path.
pub fn pid_exe(pid: u32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(stripped) => Some(PathBuf::from(stripped)),
        None => Some(link),
    }
}

/// Resident memory (VmRSS) of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Kills process group `pgid` (SIGTERM, then SIGKILL after `grace`) and waits until its leader
/// is gone. For processes this process does not own (e.g. `testbed down` from another shell).
pub async fn kill_group(pgid: u32, grace: Duration) {
    signal_group(pgid, Signal::CONT);
    signal_group(pgid, Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pid_alive(pgid) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(pgid, Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pid_alive(pgid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drop_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ProcessSpec::new("sleeper", "/bin/sh", dir.path().join("sh.log"))
            .args(["-c", "sleep 300 & echo started; wait"]);
        let p = Process::spawn(spec).unwrap();
        let pid = p.pid();
        // wait for the grandchild to exist
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(dir.path().join("sh.log"))
            .unwrap_or_default()
            .contains("started")
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grandchild = group_members(pid);
        assert!(grandchild.len() >= 2, "{grandchild:?}");
        drop(p);
        tokio::time::sleep(Duration::from_millis(200)).await;
        for m in grandchild {
            assert!(!pid_alive(m), "{m} survived");
        }
    }

    fn group_members(pgid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // state ppid pgrp
            if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
                out.push(pid);
            }
        }
        out
    }

    #[test]
    fn picked_ports_are_free_distinct_and_below_the_ephemeral_range() {
        let (low, high) = server_port_range();
        let ports: Vec<u16> = (0..200).map(|_| pick_port().unwrap()).collect();
        for p in &ports {
            assert!((low..=high).contains(p), "{p} outside {low}..={high}");
            std::net::TcpListener::bind(("127.0.0.1", *p)).unwrap();
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let start: u16 = ephemeral
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            high < start,
            "range {low}..={high} overlaps the ephemeral range from {start}"
        );
    }

    #[test]
    fn port_pair_is_free() {
        let p = pick_port_pair().unwrap();
        std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
    }
}
