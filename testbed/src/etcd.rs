//! The one etcd every simulated cluster shares (each apiserver under its own key prefix).

use std::path::Path;
use std::time::Duration;

use crate::process::{self, Process, ProcessSpec};
use crate::{Error, Result};

/// A running etcd.
#[derive(Debug)]
pub(crate) struct Etcd {
    pub(crate) process: Process,
    /// `http://127.0.0.1:<port>`
    pub(crate) url: String,
}

const ATTEMPTS: u32 = 5;

/// Starts etcd with its data under `dir` (`dir/data`, log `dir/etcd.log`).
pub(crate) async fn start(bin: &Path, dir: &Path) -> Result<Etcd> {
    start_with(bin, dir, process::pick_port).await
}

/// [`start`] with the client port chosen by `pick` (tests inject a taken port).
async fn start_with(bin: &Path, dir: &Path, mut pick: impl FnMut() -> Result<u16>) -> Result<Etcd> {
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    for attempt in 1..=ATTEMPTS {
        let client_port = pick()?;
        let peer_port = process::pick_port()?;
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let spec = ProcessSpec::new("etcd", bin, dir.join("etcd.log")).args([
            "--name=testbed".to_owned(),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=testbed={peer}"),
            // Tests do not need durability; fsync dominates etcd latency on small disks.
            "--unsafe-no-fsync".to_owned(),
            "--log-level=warn".to_owned(),
        ]);
        let addr = format!("127.0.0.1:{client_port}");
        let ready = || {
            let addr = addr.clone();
            async move {
                matches!(crate::http::get(&addr, "/health", None).await,
                    Ok(r) if r.is_success() && r.body.contains("\"health\":\"true\""))
            }
        };
        match process::spawn_until_ready(spec, Duration::from_secs(60), ready).await {
            Ok(process) => return Ok(Etcd { process, url }),
            Err(e) if process::is_port_conflict(&e) => {
                tracing::info!(attempt, "etcd port taken, picking another");
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::PortsExhausted {
        name: "etcd".into(),
        attempts: ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bind-then-release can race with another process taking the port; the start must then
    /// be retried on another port. Force the race with a port we hold.
    #[tokio::test]
    async fn a_taken_port_is_detected_and_another_one_used() {
        let bin = match crate::Binaries::locate().etcd() {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        let dir = tempfile::tempdir().unwrap();
        let held = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let taken = held.local_addr().unwrap().port();
        let mut picks = 0;
        let etcd = start_with(&bin, dir.path(), || {
            picks += 1;
            if picks == 1 {
                Ok(taken)
            } else {
                process::pick_port()
            }
        })
        .await
        .unwrap();
        assert_eq!(picks, 2, "the first attempt must fail on the taken port");
        assert!(!etcd.url.ends_with(&format!(":{taken}")));
        assert!(
            process::log_tail(&dir.path().join("etcd.log"), 200).contains("address already in use")
        );
    }
}
