//! A mutual-TLS handshake between two workloads over loopback, the way two sidecars do it:
//! each side presents the certificate its istiod issued and trusts only the bundle its own
//! istiod published (`istio-ca-root-cert`), checking the peer with [`SpiffeVerifier`].
//!
//! After the handshake each side writes one line and reads the other's, so a side that
//! rejected its peer makes the whole exchange fail on both ends (in TLS 1.3 a client finishes
//! its handshake before the server has looked at the client's certificate).

use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::ca_client::WorkloadCert;
use crate::verifier::{SpiffeVerifier, spiffe_id};
use crate::{Error, Result, parse_pem_certs};

/// How long a handshake and its one-line exchange may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// A workload: its certificate and key, and the roots it trusts.
#[derive(Debug, Clone)]
pub struct Workload {
    cert: WorkloadCert,
    trust: Vec<CertificateDer<'static>>,
}

/// What each side saw of the other after a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The server's SPIFFE ID, as the client verified it.
    pub client_saw: String,
    /// The client's SPIFFE ID, as the server verified it.
    pub server_saw: String,
}

impl Workload {
    /// A workload holding `cert` and trusting the roots in `trust_bundle_pem` (the
    /// `istio-ca-root-cert` ConfigMap of its namespace).
    pub fn new(cert: WorkloadCert, trust_bundle_pem: &[u8]) -> Result<Self> {
        let trust = parse_pem_certs(trust_bundle_pem, "trust bundle")?;
        if trust.is_empty() {
            return Err(Error::Certificate("the trust bundle is empty".into()));
        }
        Ok(Self { cert, trust })
    }

    /// Its SPIFFE ID.
    pub fn id(&self) -> &str {
        &self.cert.spiffe_id
    }

    /// Its certificate.
    pub fn cert(&self) -> &WorkloadCert {
        &self.cert
    }

    /// The roots it trusts.
    pub fn trust(&self) -> &[CertificateDer<'static>] {
        &self.trust
    }

    fn verifier(&self) -> Result<Arc<SpiffeVerifier>> {
        Ok(Arc::new(SpiffeVerifier::new(&self.trust)?))
    }

    /// Its server side: requires and verifies a client certificate.
    pub fn server_config(&self) -> Result<ServerConfig> {
        Ok(ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(self.verifier()?)
            .with_single_cert(self.cert.chain().to_vec(), self.cert.key())?)
    }

    /// Its client side: presents its certificate, verifies the server as a SPIFFE peer.
    pub fn client_config(&self) -> Result<ClientConfig> {
        Ok(ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier()?)
            .with_client_auth_cert(self.cert.chain().to_vec(), self.cert.key())?)
    }
}

fn peer_id(certs: Option<&[CertificateDer<'static>]>) -> std::result::Result<String, String> {
    let leaf = certs
        .and_then(|c| c.first())
        .ok_or("the peer presented no certificate")?;
    spiffe_id(leaf).map_err(|e| e.to_string())
}

/// `client` connects to `server` over loopback; both must accept the other. Returns the SPIFFE
/// ID each side verified, or [`Error::Handshake`] with what each side reported.
pub async fn handshake(client: &Workload, server: &Workload) -> Result<Outcome> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(Error::io("bind 127.0.0.1:0"))?;
    let addr = listener.local_addr().map_err(Error::io("local address"))?;
    let acceptor = TlsAcceptor::from(Arc::new(server.server_config()?));
    let connector = TlsConnector::from(Arc::new(client.client_config()?));

    let server_side = async move {
        let (tcp, _) = listener
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = peer_id(tls.get_ref().1.peer_certificates())?;
        exchange(tls, "server").await?;
        Ok::<String, String>(peer)
    };
    let client_side = async move {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Any valid name: the SPIFFE verifier does not look at it.
        let name = ServerName::try_from("workload.mesh.invalid").map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let peer = peer_id(tls.get_ref().1.peer_certificates())?;
        exchange(tls, "client").await?;
        Ok::<String, String>(peer)
    };
    let both = async { tokio::join!(client_side, server_side) };
    let (c, s) = tokio::time::timeout(HANDSHAKE_TIMEOUT, both)
        .await
        .map_err(|_| Error::Timeout(format!("mTLS handshake on {addr}")))?;
    match (c, s) {
        (Ok(client_saw), Ok(server_saw)) => Ok(Outcome {
            client_saw,
            server_saw,
        }),
        (c, s) => Err(Error::Handshake {
            client: c.err().unwrap_or_else(|| "ok".into()),
            server: s.err().unwrap_or_else(|| "ok".into()),
        }),
    }
}

/// Writes one line, reads the peer's line, closes.
async fn exchange<S>(stream: S, me: &str) -> std::result::Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(format!("hello from the {me}\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream
        .get_mut()
        .flush()
        .await
        .map_err(|e| format!("flush: {e}"))?;
    let mut line = String::new();
    let n = stream
        .read_line(&mut line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("the peer closed the connection without a word".into());
    }
    let _ = stream.get_mut().shutdown().await;
    Ok(())
}
