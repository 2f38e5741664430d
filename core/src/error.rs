//! The one error type of the core crate.

/// Everything that can go wrong in the trust core. Every message is meant to be shown to a
/// user as is: it names the input and the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that is not the PEM it should be (garbage, truncated, wrong block type).
    #[error("{source_name}: {reason}")]
    Pem {
        /// The file or field the PEM came from.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A private or public key that is malformed, of an unsupported type, or too weak.
    #[error("{0}")]
    Key(String),
    /// A certificate that cannot be parsed or does not have the shape it must have.
    #[error("{0}")]
    Certificate(String),
    /// An existing CA that cannot be imported (not a CA, wrong key, expired, ...).
    #[error("cannot use this CA: {0}")]
    CaRejected(String),
    /// A CSR that the signing policy refuses.
    #[error("CSR refused: {0}")]
    CsrRefused(String),
    /// A malformed value: cluster name, trust domain, SPIFFE ID, duration.
    #[error("{0}")]
    Invalid(String),
    /// A chain that does not verify.
    #[error("{0}")]
    Verification(String),
    /// The certificate library failed to produce a certificate or CSR.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
}

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
