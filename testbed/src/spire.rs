//! A SPIRE server (the SPIFFE reference implementation, `tools/build.sh spire`) on loopback, for
//! the SPIFFE federation proofs: its own trust domain, a SQLite datastore and an in-memory key
//! manager under the given directory, its API on a Unix socket there, its bundle endpoint
//! (profile `https_spiffe`, SPIRE's default) on a loopback port, and any `federates_with`
//! relationships.
//!
//! [`SpireServer::cli`] runs `spire-server <command> -socketPath …` against it (`bundle list`,
//! `bundle show`, `x509 mint`…). [`SpireServer::stop`] and [`SpireServer::start_again`] take it
//! down and back up with the same ports, datastore and CA (an outage its peers see).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pki;
use crate::process::{self, ProcessSpec};
use crate::{Error, Result};

/// How SPIRE authenticates a peer's bundle endpoint (SPIFFE Federation §5.2).
#[derive(Clone, Debug)]
pub enum Profile {
    /// Web PKI: the system roots (`SSL_CERT_FILE`).
    HttpsWeb,
    /// The endpoint's X509-SVID for this SPIFFE ID, verified against the peer's bundle SPIRE
    /// already holds (set it first with `bundle set`).
    HttpsSpiffe {
        /// The endpoint's SPIFFE ID.
        endpoint_spiffe_id: String,
    },
}

/// A `federates_with` relationship.
#[derive(Clone, Debug)]
pub struct FederatesWith {
    /// The peer's trust domain.
    pub trust_domain: String,
    /// Its bundle endpoint URL.
    pub url: String,
    /// How to authenticate it.
    pub profile: Profile,
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct SpireOptions {
    /// Its trust domain.
    pub trust_domain: String,
    /// Its peers.
    pub federates_with: Vec<FederatesWith>,
    /// `SSL_CERT_FILE` for the server (the Web PKI roots of `https_web` peers).
    pub ssl_cert_file: Option<PathBuf>,
    /// `refresh_hint` of its own bundle endpoint.
    pub refresh_hint: Duration,
    /// Serve its own bundle endpoint with profile `https_web` and this certificate and key
    /// (files), instead of `https_spiffe` with its own SVID.
    pub endpoint_web_cert: Option<(PathBuf, PathBuf)>,
}

/// A running SPIRE server; killed when dropped.
pub struct SpireServer {
    bin: PathBuf,
    socket: PathBuf,
    bundle_endpoint: String,
    trust_domain: String,
    spec: ProcessSpec,
    process: process::Slot,
}

impl std::fmt::Debug for SpireServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpireServer")
            .field("trust_domain", &self.trust_domain)
            .field("bundle_endpoint", &self.bundle_endpoint)
            .finish_non_exhaustive()
    }
}

fn config(dir: &Path, port: u16, endpoint_port: u16, opts: &SpireOptions) -> String {
    let mut federates = String::new();
    for f in &opts.federates_with {
        let profile = match &f.profile {
            Profile::HttpsWeb => "bundle_endpoint_profile \"https_web\" {}".to_owned(),
            Profile::HttpsSpiffe { endpoint_spiffe_id } => format!(
                "bundle_endpoint_profile \"https_spiffe\" {{ endpoint_spiffe_id = \"{endpoint_spiffe_id}\" }}"
            ),
        };
        federates.push_str(&format!(
            "        federates_with \"{}\" {{\n            bundle_endpoint_url = \"{}\"\n            {profile}\n        }}\n",
            f.trust_domain, f.url
        ));
    }
    let web = match &opts.endpoint_web_cert {
        None => String::new(),
        Some((cert, key)) => format!(
            "            profile \"https_web\" {{\n                serving_cert_file {{\n                    cert_file_path = \"{}\"\n                    key_file_path = \"{}\"\n                    file_sync_interval = \"5s\"\n                }}\n            }}\n",
            cert.display(),
            key.display()
        ),
    };
    let d = dir.display();
    format!(
        r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{d}/api.sock"
    trust_domain = "{td}"
    data_dir = "{d}/data"
    log_level = "DEBUG"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
    federation {{
        bundle_endpoint {{
            address = "127.0.0.1"
            port = {endpoint_port}
            refresh_hint = "{hint}s"
{web}        }}
{federates}    }}
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{d}/data/datastore.sqlite3"
        }}
    }}
    KeyManager "disk" {{
        plugin_data {{
            keys_path = "{d}/data/keys.json"
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
"#,
        td = opts.trust_domain,
        hint = opts.refresh_hint.as_secs().max(1),
    )
}

impl SpireServer {
    /// Starts `spire-server run` (binary `bin`) with its files under `dir`, and waits until its
    /// health check passes.
    pub async fn start(bin: &Path, dir: &Path, opts: &SpireOptions) -> Result<Self> {
        std::fs::create_dir_all(dir.join("data")).map_err(Error::io("create", dir))?;
        let (port, endpoint_port) = (process::pick_port()?, process::pick_port()?);
        let conf = dir.join("server.conf");
        pki::write_public(&conf, &config(dir, port, endpoint_port, opts))?;
        let mut spec = ProcessSpec::new(
            format!("spire-server/{}", opts.trust_domain),
            bin,
            dir.join("spire-server.log"),
        )
        .arg("run")
        .arg("-config")
        .arg(&conf);
        if let Some(file) = &opts.ssl_cert_file {
            spec = spec.env("SSL_CERT_FILE", file);
        }
        let socket = dir.join("api.sock");
        let p = Self::spawn(bin, &socket, spec.clone()).await?;
        Ok(Self {
            bin: bin.to_owned(),
            socket,
            bundle_endpoint: format!("https://127.0.0.1:{endpoint_port}"),
            trust_domain: opts.trust_domain.clone(),
            spec,
            process: process::Slot::new(p),
        })
    }

    async fn spawn(bin: &Path, socket: &Path, spec: ProcessSpec) -> Result<process::Process> {
        let (bin, socket) = (bin.to_owned(), socket.to_owned());
        process::spawn_until_ready(spec, Duration::from_secs(60), move || {
            let (bin, socket) = (bin.clone(), socket.clone());
            async move {
                tokio::process::Command::new(&bin)
                    .arg("healthcheck")
                    .arg("-socketPath")
                    .arg(&socket)
                    .output()
                    .await
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            }
        })
        .await
    }

    /// Its trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Its own bundle endpoint (`https_spiffe` with SPIFFE ID `spiffe://<td>/spire/server`, or
    /// `https_web` with [`SpireOptions::endpoint_web_cert`]).
    pub fn bundle_endpoint_url(&self) -> &str {
        &self.bundle_endpoint
    }

    /// `spire-server <command> -socketPath … <args>`: its stdout, or an error with stderr.
    pub async fn cli(&self, command: &[&str], args: &[&str]) -> Result<String> {
        self.cli_with_input(command, args, None).await
    }

    /// [`Self::cli`] with `input` on stdin (`bundle set`).
    pub async fn cli_with_input(
        &self,
        command: &[&str],
        args: &[&str],
        input: Option<&[u8]>,
    ) -> Result<String> {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(&self.bin)
            .args(command)
            .arg("-socketPath")
            .arg(&self.socket)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io("run", &self.bin))?;
        if let Some(mut stdin) = child.stdin.take() {
            if let Some(input) = input {
                stdin
                    .write_all(input)
                    .await
                    .map_err(Error::io("write to", &self.bin))?;
            }
            drop(stdin);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(Error::io("run", &self.bin))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Spire(format!(
                "spire-server {} failed ({}): {}{}",
                command.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.spec.log, lines)
    }

    /// Stops it (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(&self) {
        self.process.stop(Duration::from_secs(5)).await;
    }

    /// Starts it again after [`Self::stop`]: same ports, datastore and keys.
    pub async fn start_again(&self) -> Result<()> {
        let p = Self::spawn(&self.bin, &self.socket, self.spec.clone()).await?;
        self.process.put(p);
        Ok(())
    }
}
