//! A rustls certificate verifier for SPIFFE peers, on both ends of a connection: the hub's
//! `https_spiffe` bundle endpoint client (SPIFFE Federation §5.2.2) and the test workloads of
//! the `mtls` crate.
//!
//! Istio's sidecars do not check DNS names between workloads: they validate the peer's chain
//! against the roots they were given and then look at the peer's SPIFFE ID (the URI SAN). This
//! verifier does the same:
//!
//! 1. webpki path validation of the peer's chain up to one of the roots (signatures, validity
//!    at the handshake time, CA constraints, path lengths, the extended key usage of the
//!    direction: serverAuth for a server, clientAuth for a client);
//! 2. the leaf must carry exactly one URI SAN, a SPIFFE ID with a path (X509-SVID §2, §4.1);
//! 3. if expected peers are configured, the ID must be one of them.
//!
//! The handshake signature itself is checked with the *ring* provider's algorithms, as
//! rustls's own verifiers do.

use std::sync::Arc;

use federator_core::identity::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use federator_core::{Error, Result};

/// Verifies SPIFFE peers against a fixed set of roots. Used as a client's
/// [`ServerCertVerifier`] and as a server's [`ClientCertVerifier`].
#[derive(Debug)]
pub struct SpiffeVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    expected: Option<Vec<String>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeVerifier {
    /// A verifier trusting exactly `roots` (DER), accepting any valid SPIFFE ID.
    pub fn new(roots: &[CertificateDer<'_>]) -> Result<Self> {
        if roots.is_empty() {
            return Err(Error::Certificate("no roots to trust".into()));
        }
        let anchors = roots
            .iter()
            .map(|r| {
                webpki::anchor_from_trusted_cert(r)
                    .map(|a| a.to_owned())
                    .map_err(|e| {
                        Error::Certificate(format!("a root is not a usable trust anchor: {e}"))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            anchors,
            expected: None,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }

    /// Accepts only peers whose SPIFFE ID is one of `ids`.
    pub fn expect_peers<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.expected = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// Verifies a peer chain for `usage` at `now` and returns its SPIFFE ID.
    pub fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> std::result::Result<String, rustls::Error> {
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(webpki_error)?;
        ee.verify_for_usage(
            self.algorithms.all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(webpki_error)?;
        let id = spiffe_id(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        if let Some(expected) = &self.expected
            && !expected.contains(&id)
        {
            tracing::debug!(peer = %id, ?expected, "unexpected SPIFFE peer");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(id)
    }
}

/// The SPIFFE ID of an X509-SVID leaf: its only URI SAN, which must be a SPIFFE ID with a path.
pub fn spiffe_id(leaf: &CertificateDer<'_>) -> Result<String> {
    let cert =
        federator_core::cert::parse_der(leaf).map_err(|e| Error::Certificate(e.to_string()))?;
    let uris = federator_core::cert::uri_sans(&cert);
    let [uri] = uris.as_slice() else {
        return Err(Error::Certificate(format!(
            "not an X509-SVID: {} URI SAN(s), exactly one expected",
            uris.len()
        )));
    };
    let id = SpiffeId::parse(uri).map_err(|e| Error::Certificate(e.to_string()))?;
    if id.path().is_empty() {
        return Err(Error::Certificate(format!(
            "not a workload SPIFFE ID (no path): {uri}"
        )));
    }
    Ok(uri.clone())
}

fn webpki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let c = match e {
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::CertRevoked => CertificateError::Revoked,
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(c)
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.verify_peer(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.verify_peer(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
