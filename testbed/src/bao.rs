//! An OpenBao dev server (`bao server -dev`) on a loopback port with a random root token.
//!
//! Writes `DIR/bao/addr` (`http://127.0.0.1:<port>`) and `DIR/bao/token` (0600). Dev mode keeps
//! everything in memory: [`Bao::stop`] followed by [`Bao::start_again`] gives an empty, freshly
//! unsealed server with the same address and root token (mounts and keys are gone). To simulate
//! an outage that keeps state, use [`Bao::pause`] / [`Bao::resume`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::http;
use crate::pki;
use crate::process::{self, ProcessSpec};
use crate::{Error, Result};

const ATTEMPTS: u32 = 5;

/// A handle to the OpenBao dev server. Cheap to clone.
#[derive(Clone)]
pub struct Bao {
    inner: Arc<Inner>,
}

struct Inner {
    host_port: String,
    addr: String,
    token: String,
    dir: PathBuf,
    spec: ProcessSpec,
    process: process::Slot,
}

impl std::fmt::Debug for Bao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bao")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

fn random_token() -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut buf = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(Error::io("read", path))?;
    // Custom root token ids may not contain '.' (OpenBao answers "invalid request").
    Ok(format!(
        "testbed-{}",
        buf.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

async fn healthy(host_port: &str) -> bool {
    matches!(http::get(host_port, "/v1/sys/health", None).await, Ok(r) if r.status == 200)
}

impl Bao {
    /// Starts `bao server -dev` (binary `bin`) with its files under `dir`. Usually called
    /// through [`crate::Testbed::start_bao`], which ties it to the testbed.
    pub async fn start(bin: &Path, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let token = random_token()?;
        for attempt in 1..=ATTEMPTS {
            // The dev server also listens on port + 1 (its cluster port).
            let port = process::pick_port_pair()?;
            let host_port = format!("127.0.0.1:{port}");
            let spec = ProcessSpec::new("bao", bin, dir.join("bao.log"))
                .args([
                    "server".to_owned(),
                    "-dev".to_owned(),
                    format!("-dev-listen-address={host_port}"),
                    // Do not write ~/.vault-token.
                    "-dev-no-store-token".to_owned(),
                ])
                // In the environment, not argv: /proc/<pid>/environ is readable by the owner only.
                .env("BAO_DEV_ROOT_TOKEN_ID", &token)
                .env("HOME", dir);
            let hp = host_port.clone();
            match process::spawn_until_ready(spec.clone(), Duration::from_secs(60), || {
                let hp = hp.clone();
                async move { healthy(&hp).await }
            })
            .await
            {
                Ok(p) => {
                    let addr = format!("http://{host_port}");
                    pki::write_public(&dir.join("addr"), &format!("{addr}\n"))?;
                    pki::write_private(&dir.join("token"), &format!("{token}\n"))?;
                    return Ok(Self {
                        inner: Arc::new(Inner {
                            host_port,
                            addr,
                            token,
                            dir: dir.to_owned(),
                            spec,
                            process: process::Slot::new(p),
                        }),
                    });
                }
                Err(e) if process::is_port_conflict(&e) => {
                    tracing::info!(attempt, port, "bao port taken, picking another");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::PortsExhausted {
            name: "bao".into(),
            attempts: ATTEMPTS,
        })
    }

    /// `http://127.0.0.1:<port>` (what `VAULT_ADDR`/`BAO_ADDR` expect).
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// `127.0.0.1:<port>`
    pub fn host_port(&self) -> &str {
        &self.inner.host_port
    }

    /// The root token.
    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// The directory holding `addr`, `token` and `bao.log`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.inner.spec.log
    }

    /// The server's pid (and process group), if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.inner.process.pid()
    }

    /// Whether the server process runs.
    pub fn is_running(&self) -> bool {
        self.inner.process.is_running()
    }

    /// `GET /v1/sys/health` (unauthenticated).
    pub async fn health(&self) -> Result<http::Response> {
        http::get(self.host_port(), "/v1/sys/health", None).await
    }

    /// `GET /v1/<path>` with the root token.
    pub async fn get(&self, path: &str) -> Result<http::Response> {
        http::get(self.host_port(), &format!("/v1/{path}"), Some(self.token())).await
    }

    /// `POST /v1/<path>` with the root token and a JSON body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<http::Response> {
        http::post(
            self.host_port(),
            &format!("/v1/{path}"),
            Some(self.token()),
            body,
        )
        .await
    }

    /// Stops the server (its in-memory state is lost).
    pub async fn stop(&self) {
        self.inner.process.stop(Duration::from_secs(10)).await;
    }

    /// Starts a fresh dev server on the same address with the same root token.
    pub async fn start_again(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let hp = self.inner.host_port.clone();
        let p =
            process::spawn_until_ready(self.inner.spec.clone(), Duration::from_secs(60), || {
                let hp = hp.clone();
                async move { healthy(&hp).await }
            })
            .await?;
        self.inner.process.put(p);
        Ok(())
    }

    /// Freezes the server (SIGSTOP), keeping its state.
    pub fn pause(&self) {
        self.inner.process.pause();
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) {
        self.inner.process.resume();
    }

    pub(crate) fn kill(&self) {
        self.inner.process.kill();
    }
}
