//! The one error type of the agent library.

/// Everything that makes a reconcile fail (and be retried with backoff), or keeps the agent
/// from starting. Messages name the object and what to do; none ever holds key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request to the API server failed.
    #[error("cannot {action}: {}", describe(.source))]
    Kube {
        /// What the agent was doing, e.g. "update Secret istio-system/cacerts".
        action: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A namespace the agent writes into does not exist.
    #[error(
        "namespace {0} does not exist: `federator join` creates it (or create it yourself); the agent retries"
    )]
    NamespaceMissing(String),
    /// The trust core refused an operation (key generation, CSR).
    #[error(transparent)]
    Trust(#[from] federator_core::Error),
    /// The kubeconfig cannot be read or used.
    #[error("cannot use kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: std::path::PathBuf,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster configuration is there.
    #[error(
        "not running in a cluster ({0}): pass --kubeconfig FILE to run the agent outside its cluster"
    )]
    NotInCluster(#[source] kube::config::InClusterError),
    /// `--context` without `--kubeconfig`.
    #[error("--context needs --kubeconfig (in a cluster there is no context to choose)")]
    ContextWithoutKubeconfig,
    /// The blocking task that generates a key did not finish (it panicked, or the runtime
    /// is shutting down).
    #[error("the key generation task did not finish: {0}")]
    KeyTask(#[source] tokio::task::JoinError),
    /// The client cannot be built from the configuration.
    #[error("cannot build a client: {0}")]
    Client(#[source] Box<kube::Error>),
}

impl Error {
    /// Wraps a client error with what the agent was doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube {
            action,
            source: Box::new(source),
        }
    }

    /// Whether this is the API server answering 409 (another writer won: a plain retry
    /// settles it).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube { source, .. } if federator_api::plumbing::is_status(source, 409))
    }
}

/// The API server's own message for API errors (not the whole status object), the error
/// otherwise.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// Result alias for the agent library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
