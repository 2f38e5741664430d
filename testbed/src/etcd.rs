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
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    for attempt in 1..=ATTEMPTS {
        let client_port = process::pick_port()?;
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
