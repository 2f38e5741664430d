//! Crashes at named points ([`federator_api::failpoint`]) and what "converged" means after
//! one: the hub, an agent or the CLI is started armed to SIGKILL itself at a point, the test
//! proves it died there, starts it again unarmed, and checks every member agrees with the hub
//! on exactly one intermediate ([`wait_agreement`]) and that the clusters hold exactly the
//! objects a run without the crash leaves ([`object_keys`]).

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::time::{Duration, Instant};

use federator_api::failpoint;
use federator_api::names;
use federator_core::{cacerts, cert};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use testbed::Process;

use crate::snapshot::Snapshotter;
use crate::{Federation, LOG_LEVEL, bin};

/// How long an armed process may take to reach its point once the test triggered it.
pub const REACH: Duration = Duration::from_secs(60);

impl Federation {
    /// Starts `federator serve` (like [`Federation::start_serve`]) armed to crash at `point`.
    pub fn start_serve_armed(&mut self, extra: &[&str], point: &str) {
        let kubeconfig = self.hub.kubeconfig_path().to_owned();
        let spec = self
            .serve_spec(extra, LOG_LEVEL, &kubeconfig)
            .env(failpoint::ENV, point);
        self.serve = Some(Process::spawn(spec).unwrap());
    }

    /// Starts member `name`'s agent armed to crash at `point`.
    pub fn start_agent_armed(&mut self, name: &str, point: &str) {
        let spec = self.agent_spec(name, LOG_LEVEL).env(failpoint::ENV, point);
        self.members.get_mut(name).unwrap().agent = Some(Process::spawn(spec).unwrap());
    }

    /// Runs `federator args` armed to crash at `point` and asserts that it did.
    pub fn federator_crashes_at(&self, args: &[&str], point: &str) {
        let out = std::process::Command::new(bin("federator"))
            .args(args)
            .env("FEDERATOR_HUB_KUBECONFIG", self.hub.kubeconfig_path())
            .env(failpoint::ENV, point)
            .output()
            .unwrap();
        assert_crashed_at(&out, point, args);
    }

    /// Waits until the armed `serve` has crashed at `point`.
    pub async fn serve_crashed_at(&mut self, point: &str) {
        wait_crashed_at(self.serve.as_mut().unwrap(), point).await;
    }

    /// Waits until member `name`'s armed agent has crashed at `point`.
    pub async fn agent_crashed_at(&mut self, name: &str, point: &str) {
        wait_crashed_at(self.agent_process(name), point).await;
    }
}

fn said_so(log: &str, point: &str) -> bool {
    log.contains(&format!("failpoint {point}: SIGKILL"))
}

/// Asserts that a `federator` run ended by SIGKILL at `point` (its last words say which).
pub fn assert_crashed_at(out: &Output, point: &str, args: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.signal() == Some(9) && said_so(&stderr, point),
        "federator {args:?} was to crash at {point}, but ended with {}: {}{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Waits (up to [`REACH`]) until `p` died by SIGKILL at `point`.
pub async fn wait_crashed_at(p: &mut Process, point: &str) {
    let deadline = Instant::now() + REACH;
    loop {
        if let Some(status) = p.exit_status() {
            let log = std::fs::read_to_string(p.log_path()).unwrap_or_default();
            assert!(
                status.signal() == Some(9) && said_so(&log, point),
                "{} was to crash at {point}, but ended with {status}:\n{}",
                p.name(),
                p.log_tail(30)
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not reach crash point {point} in {REACH:?}:\n{}",
            p.name(),
            p.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether one reading of the member finds the certificate the hub signed last installed in
/// `cacerts`, with the key the agent holds, and reported on the hub; else what disagreed.
pub async fn agreement(fed: &Federation, name: &str) -> Result<(), String> {
    let ct = fed.cluster_trust(name).await.ok_or("no ClusterTrust")?;
    let signed = ct.spec.signed.clone().ok_or("nothing signed")?;
    let installed = ct
        .status
        .clone()
        .and_then(|s| s.installed)
        .ok_or("nothing installed")?;
    let files = fed.cacerts(name).await.ok_or("no cacerts")?;
    let report = cacerts::inspect(&files, time::OffsetDateTime::now_utc());
    let in_cacerts = report.ca.as_ref().map(|c| c.serial.clone());
    let agent_secret = Api::<Secret>::namespaced(
        fed.members[name]
            .cluster
            .client()
            .await
            .map_err(|e| e.to_string())?,
        names::NAMESPACE,
    )
    .get(names::AGENT_KEY_SECRET)
    .await
    .map_err(|e| e.to_string())?;
    let agent_key = agent_secret
        .data
        .and_then(|d| d.get("installed-key.pem").cloned())
        .map(|k| k.0);
    let reported = fed
        .member_cluster(name)
        .await
        .and_then(|m| m.status)
        .map(|s| s.ca_serial);
    let agrees = installed.serial == signed.serial
        && in_cacerts.as_deref() == Some(signed.serial.as_str())
        && agent_key.as_ref() == files.get("ca-key.pem")
        && reported.as_deref() == Some(signed.serial.as_str());
    if agrees {
        Ok(())
    } else {
        Err(format!(
            "signed {}, installed {}, in cacerts {in_cacerts:?}, reported {reported:?}, agent key {}",
            signed.serial,
            installed.serial,
            if agent_key.as_ref() == files.get("ca-key.pem") {
                "matches cacerts"
            } else {
                "differs from cacerts"
            }
        ))
    }
}

/// Waits (up to `timeout`) until [`agreement`] holds for `name`, then asserts its `cacerts`
/// is valid and holds exactly one intermediate: one signing certificate, a chain of it plus
/// the root, and exactly istiod's four files.
pub async fn wait_agreement(fed: &Federation, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match agreement(fed, name).await {
            Ok(()) => break,
            Err(last) if Instant::now() >= deadline => {
                panic!("{name}: the hub, the agent and cacerts never agreed: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    let files = fed.cacerts(name).await.unwrap();
    let report = cacerts::inspect(&files, time::OffsetDateTime::now_utc());
    assert!(report.is_ok(), "{name}: {:?}", report.problems);
    assert_eq!(
        cert::parse_pem_certificates(&files[cacerts::CA_CERT], "ca")
            .unwrap()
            .len(),
        1,
        "{name}: one signing certificate"
    );
    assert_eq!(report.chain.len(), 2, "{name}: cluster CA + root");
    assert_eq!(
        files.len(),
        4,
        "{name}: istiod's four files: {:?}",
        files.keys()
    );
}

/// The objects every cluster of `snapshotter` stores now (`<cluster> <kind> <ns>/<name>`,
/// Events and Leases left out): the same set after a crash and its recovery as after the same
/// flow without the crash means nothing was orphaned and nothing is missing.
pub async fn object_keys(snapshotter: &Snapshotter) -> BTreeSet<String> {
    snapshotter.take().await.into_keys().collect()
}

/// Asserts two object sets are the same, naming the difference.
pub fn assert_same_objects(what: &str, want: &BTreeSet<String>, got: &BTreeSet<String>) {
    let missing: Vec<&String> = want.difference(got).collect();
    let extra: Vec<&String> = got.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: objects missing {missing:#?}, orphaned {extra:#?}"
    );
}

/// Waits (up to 60 s) until the clusters hold exactly the objects `want`, then asserts it,
/// naming what is missing or orphaned.
pub async fn wait_same_objects(what: &str, snapshotter: &Snapshotter, want: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = object_keys(snapshotter).await;
        if &got == want || Instant::now() >= deadline {
            assert_same_objects(what, want, &got);
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
