//! The crate's error type.

/// What can go wrong while asking istiod for a certificate or shaking hands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed.
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    /// Building a TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// HTTP/2 failed (connection, stream or protocol error).
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),

    /// The server answered with a gRPC status other than OK.
    #[error("gRPC status {code} ({name}): {message}", name = crate::grpc::code_name(*code))]
    Grpc { code: u32, message: String },

    /// The server's answer does not follow the gRPC protocol.
    #[error("gRPC protocol: {0}")]
    Protocol(String),

    /// The response message does not decode.
    #[error("protobuf: {0}")]
    Decode(#[from] prost::DecodeError),

    /// A certificate, key or PEM text is not usable.
    #[error("certificate: {0}")]
    Certificate(String),

    /// Making the workload key or CSR failed.
    #[error("key or CSR generation: {0}")]
    Keygen(#[from] rcgen::Error),

    /// The mutual-TLS handshake (or the exchange right after it) failed on one side or both.
    #[error("mTLS handshake failed: client: {client}; server: {server}")]
    Handshake { client: String, server: String },

    /// Something took too long.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<federator_core::Error> for Error {
    fn from(e: federator_core::Error) -> Self {
        Error::Certificate(e.to_string())
    }
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }
}
