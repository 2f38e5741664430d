//! # mtls: workloads as Istio sees them, for tests
//!
//! The end-to-end proof that a federation works is not that a Secret has the right bytes, but
//! that two workloads of two clusters, each holding a certificate its own istiod issued,
//! complete a mutual-TLS handshake. This crate plays those workloads, with no sidecar:
//!
//! | module | what it does |
//! |---|---|
//! | [`ca_client`] | asks a cluster's istiod for a workload certificate, like istio-agent does: `IstioCertificateService/CreateCertificate` over TLS (port 15012), a fresh ECDSA P-256 key and CSR, a ServiceAccount token as bearer |
//! | [`verifier`] | a rustls verifier for SPIFFE peers: webpki chain validation against a bundle of roots, then the peer's SPIFFE ID from its URI SAN (no DNS name check) |
//! | [`handshake`] | a mutual-TLS handshake over loopback between two [`handshake::Workload`]s, each trusting only its own bundle, reporting the SPIFFE ID each side saw |
//! | [`grpc`] | the minimal unary gRPC client underneath (HTTP/2 with `h2`, protobuf with `prost`) |
//! | [`proto`] | the three messages of Istio's `security/v1alpha1/ca.proto`, hand-written (no `protoc`) |
//!
//! Everything is rustls with the *ring* provider, which the workspace already uses.

pub mod ca_client;
mod error;
pub mod grpc;
pub mod handshake;
pub mod proto;

#[cfg(test)]
mod tests;

pub use ca_client::{CaClient, WorkloadCert};
pub use error::{Error, Result};
/// The SPIFFE peer verifier, shared with the hub (its `https_spiffe` bundle endpoint client).
pub use federator_api::spiffe_tls as verifier;
pub use handshake::{Outcome, Workload, handshake};
pub use verifier::SpiffeVerifier;

/// The TLS server name istiod's serving certificate always carries (`istiod.<ns>.svc`).
pub const ISTIOD_SERVER_NAME: &str = "istiod.istio-system.svc";

/// The audience istiod's TokenReview asks for (`TOKEN_AUDIENCES`, default `istio-ca`).
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

/// The crypto provider every config of this crate uses (rustls with *ring*).
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every `CERTIFICATE` block of a PEM text (e.g. an `istio-ca-root-cert` bundle).
pub fn parse_pem_certs(
    pem: &[u8],
    what: &str,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    let ders = federator_core::cert::parse_pem_certificates(pem, what)
        .map_err(|e| Error::Certificate(e.to_string()))?;
    Ok(ders
        .into_iter()
        .map(rustls_pki_types::CertificateDer::from)
        .collect())
}
