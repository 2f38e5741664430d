//! The one error type of the hub, and how errors map to exit codes and retries.

use std::path::PathBuf;

/// A boxed underlying error.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in a hub command. Messages are one line and say what to do;
/// the underlying error stays reachable as the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line or its input files are wrong; the user must change them.
    #[error("{0}")]
    Usage(String),
    /// Input rejected by the trust core (malformed PEM, weak key, refused CSR, ...).
    #[error(transparent)]
    Core(#[from] federator_core::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and found problems (for example `ca inspect`); already reported.
    #[error("{0}")]
    ProblemsFound(String),
    /// Something could not be encoded or decoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: Source,
    },
    /// A cluster (hub or member) could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The given credential lacks permissions; the message lists them.
    #[error("{0}")]
    Permissions(String),
    /// The request conflicts with existing state (another root, another trust domain, ...).
    #[error("{0}")]
    Refused(String),
    /// The agent Deployment `join` installed cannot become available; the message says why
    /// and what to do.
    #[error("{0}")]
    AgentUnavailable(String),
    /// `serve` holds back for a while (a member's signing budget is spent); the message says
    /// how long.
    #[error("{0}")]
    RateLimited(String),
    /// The hub has no federation yet.
    #[error("the hub is not initialised: run `federator init` first")]
    NotInitialised,
    /// A kubeconfig cannot be read or used.
    #[error("{what}: {source}")]
    Kubeconfig {
        /// Which kubeconfig.
        what: String,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Vault / OpenBao failed or refused. `serve` retries every Vault error: a denial can be
    /// fixed in Vault's policy, a sealed Vault unsealed, an unreachable one comes back.
    #[error("{message}")]
    Vault {
        /// What happened, with the path and what to do.
        message: String,
        /// The client's error.
        #[source]
        source: Source,
    },
    /// A Kubernetes API call failed.
    #[error("{what}: {}", describe_kube(.source))]
    Kube {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

fn describe_kube(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 => format!(
            "unauthorized (the credential was rejected: revoked or expired?): {}",
            s.message
        ),
        kube::Error::Api(s) if s.code == 403 => format!("forbidden: {}", s.message),
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

impl Error {
    /// The process exit code for this error: 2 for usage and input errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::Core(_)
            | Error::Permissions(_)
            | Error::Refused(_)
            | Error::NotInitialised
            | Error::Kubeconfig { .. } => 2,
            Error::Io { .. }
            | Error::ProblemsFound(_)
            | Error::Encode { .. }
            | Error::Unreachable(_)
            | Error::AgentUnavailable(_)
            | Error::RateLimited(_)
            | Error::Vault { .. }
            | Error::Kube { .. } => 1,
        }
    }

    /// Whether waiting may help: the signer or a cluster may come back (Vault errors, an
    /// unreachable cluster, a failed API call). `serve` then keeps what members have and
    /// retries with backoff; anything else is a refusal to report.
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            Error::Vault { .. }
                | Error::Unreachable(_)
                | Error::Kube { .. }
                | Error::RateLimited(_)
        )
    }

    /// The HTTP status of a Kubernetes API error, if this is one.
    pub fn api_status(&self) -> Option<u16> {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }

    /// Wraps a Kubernetes error with what was being done.
    pub fn kube(what: &str, source: kube::Error) -> Error {
        Error::Kube {
            what: what.to_owned(),
            source,
        }
    }

    /// Wraps an encoder's error with what was being encoded.
    pub fn encode<E>(what: &'static str) -> impl FnOnce(E) -> Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |source| Error::Encode {
            what,
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Result alias for the hub.
pub type Result<T, E = Error> = std::result::Result<T, E>;
