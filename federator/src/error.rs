//! The one error type of the hub, and how errors map to exit codes.

use std::path::PathBuf;

/// Everything that can go wrong in a hub command. Messages are one line and say what to do.
#[derive(Debug, thiserror::Error)]
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
        source: std::io::Error,
    },
    /// The command ran and found problems (for example `ca inspect`); already reported.
    #[error("{0}")]
    ProblemsFound(String),
    /// Output could not be encoded.
    #[error("cannot encode output: {0}")]
    Encode(String),
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
    /// Vault / OpenBao failed or refused; `transient` errors are retried with backoff.
    #[error("{message}")]
    Vault {
        /// What happened, with the path and what to do.
        message: String,
        /// Whether retrying later may succeed (unreachable, sealed, 5xx).
        transient: bool,
    },
    /// A Kubernetes API call failed.
    #[error("{what}: {}", describe_kube(.source))]
    Kube {
        /// What was being done.
        what: String,
        /// The error.
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
            Error::Usage(_) | Error::Core(_) | Error::Permissions(_) | Error::Refused(_) => 2,
            Error::Io { .. }
            | Error::ProblemsFound(_)
            | Error::Encode(_)
            | Error::Unreachable(_)
            | Error::AgentUnavailable(_)
            | Error::Vault { .. }
            | Error::Kube { .. } => 1,
        }
    }

    /// Wraps a Kubernetes error with what was being done.
    pub fn kube(what: &str, source: kube::Error) -> Error {
        Error::Kube {
            what: what.to_owned(),
            source,
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
