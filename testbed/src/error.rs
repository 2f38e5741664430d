//! The testbed's error type.

use std::path::PathBuf;

/// Everything that can go wrong while starting, using or stopping a testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required binary is not installed.
    #[error(
        "{name} not found at {path}: run tools/build.sh{arg} (or set FEDERATOR_BIN_DIR to the directory holding {file})",
        arg = match *name {
            "kubelet" | "kube-scheduler" | "kube-controller-manager" => " nodes",
            "helm" | "kubectl" | "promtool" => " ops",
            "spire-server" | "spire-agent" => " spire",
            "istioctl" => " istioctl",
            _ => "",
        },
        file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    )]
    MissingBinary { name: &'static str, path: PathBuf },

    /// A system tool a node needs (from a Debian package) is missing.
    #[error(
        "{name} not found: nodes need the Debian packages {packages} (`.ci/run` installs them; or `apt-get install {packages}`)"
    )]
    MissingTool {
        name: &'static str,
        packages: &'static str,
    },

    /// Setting up or running a node failed.
    #[error("node: {0}")]
    Node(String),

    /// Building an image archive failed.
    #[error("image: {0}")]
    Image(String),

    /// istiod of a declared version is not built.
    #[error(
        "istiod {version} (pilot-discovery) not found at {path}: run tools/build.sh istiod {version} (or set FEDERATOR_BIN_DIR to the directory holding pilot-discovery-{version})"
    )]
    MissingIstiod { version: String, path: PathBuf },

    /// An istiod version tools/build.sh does not declare.
    #[error(
        "istiod {0} is not one of the versions tools/build.sh builds ({versions}); add its wrapper go.mod to tools/pilot-discovery/ first",
        versions = crate::binaries::ISTIO_VERSIONS.join(", ")
    )]
    UnknownIstioVersion(String),

    /// `setpriv` (util-linux), used to give children a parent-death signal, is missing.
    #[error(
        "setpriv not found in PATH: install util-linux (it sets the children's parent-death signal)"
    )]
    MissingSetpriv,

    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Spawning or signalling a process failed.
    #[error("process {name}: {source}")]
    Process {
        name: String,
        #[source]
        source: std::io::Error,
    },

    /// A process exited before it became ready.
    #[error("{name} exited ({status}) before it was ready; log {log}:\n{tail}")]
    ExitedEarly {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    /// A process did not become ready in time.
    #[error("{name} not ready after {secs}s; log {log}:\n{tail}")]
    NotReady {
        name: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },

    /// Every attempt to start a server hit a port someone else had taken.
    #[error("{name}: port still in use after {attempts} attempts")]
    PortsExhausted { name: String, attempts: u32 },

    /// A `spire-server` command failed.
    #[error("{0}")]
    Spire(String),

    /// The directory is not usable for a new testbed.
    #[error("{0}")]
    Dir(String),

    /// No cluster of that name.
    #[error("no cluster named {0:?} in this testbed")]
    NoSuchCluster(String),

    /// OpenBao was not started for this testbed.
    #[error(
        "OpenBao is not running in this testbed: start it with `bao: true` or Testbed::start_bao"
    )]
    NoBao,

    /// Certificate or key generation failed.
    #[error("certificate generation: {0}")]
    Pki(#[from] rcgen::Error),

    /// Building a kube client failed.
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),

    /// Loading a kubeconfig failed.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    /// (De)serialising YAML failed.
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),

    /// (De)serialising JSON failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// A plain HTTP exchange (etcd, OpenBao) failed.
    #[error("http {url}: {message}")]
    Http { url: String, message: String },

    /// A Kubernetes API call the testbed makes (e.g. TokenRequest) returned something unexpected.
    #[error("{0}")]
    Api(String),
}

/// Result alias for the testbed.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
