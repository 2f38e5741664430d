//! A client for istiod's CA, `istio.v1.auth.IstioCertificateService/CreateCertificate`, doing
//! what istio-agent does for a sidecar.
//!
//! * TLS to istiod's secure gRPC port (15012 in a cluster), server name
//!   `istiod.istio-system.svc` (or any `ISTIOD_CUSTOM_HOST` value), trusting the cluster's
//!   `istio-ca-root-cert` ConfigMap content, ALPN `h2` (grpc-go insists on it);
//! * a fresh ECDSA P-256 key and a CSR for it with no names: istiod ignores the CSR's SANs and
//!   puts the *authenticated* identity, `spiffe://<trust domain>/ns/<ns>/sa/<sa>`, in the
//!   certificate;
//! * `authorization: Bearer <token>`, a ServiceAccount token for the audience `istio-ca`,
//!   which istiod checks with a TokenReview; optionally `clusterid`;
//! * the answer is the leaf, then every certificate of istiod's `cert-chain.pem`, then the
//!   whole `root-cert.pem` (possibly several roots) as the last element
//!   (`security/pkg/server/ca/server.go`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::proto::{CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse};
use crate::{Error, ISTIOD_SERVER_NAME, Result, grpc, parse_pem_certs};

/// A CA client for one istiod.
#[derive(Debug, Clone)]
pub struct CaClient {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    cluster_id: Option<String>,
    timeout: Duration,
}

impl CaClient {
    /// A client for the istiod whose secure gRPC port is `addr`, trusting the roots in
    /// `roots_pem` (the `istio-ca-root-cert` ConfigMap's `root-cert.pem`).
    pub fn new(addr: SocketAddr, roots_pem: &[u8]) -> Result<Self> {
        let mut store = RootCertStore::empty();
        for root in parse_pem_certs(roots_pem, "istio-ca-root-cert")? {
            store
                .add(root)
                .map_err(|e| Error::Certificate(format!("a root is not usable: {e}")))?;
        }
        let mut tls = ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            addr,
            server_name: ServerName::try_from(ISTIOD_SERVER_NAME)
                .map_err(|e| Error::Certificate(e.to_string()))?,
            tls: Arc::new(tls),
            cluster_id: None,
            timeout: Duration::from_secs(30),
        })
    }

    /// Uses another TLS server name (e.g. `localhost`, with `ISTIOD_CUSTOM_HOST=localhost`).
    pub fn with_server_name(mut self, name: &str) -> Result<Self> {
        self.server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| Error::Certificate(format!("invalid server name {name:?}: {e}")))?;
        Ok(self)
    }

    /// Sends `clusterid: <id>` (istiod then validates the token with that cluster's API server).
    pub fn with_cluster_id(mut self, id: &str) -> Self {
        self.cluster_id = Some(id.to_owned());
        self
    }

    /// Limits each call (connect, TLS, request, answer); 30 s by default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes a fresh ECDSA P-256 key and asks istiod for a certificate valid for `ttl`,
    /// authenticated with `token` (audience `istio-ca`).
    pub async fn create_certificate(&self, token: &str, ttl: Duration) -> Result<WorkloadCert> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
            .serialize_request(&key)?
            .pem()?;
        let chain = self.sign(token, &csr, ttl).await?;
        WorkloadCert::from_response(&chain, key.serialize_der(), key.public_key_raw())
    }

    /// Sends `csr_pem` and returns istiod's `cert_chain` as it came.
    pub async fn sign(&self, token: &str, csr_pem: &str, ttl: Duration) -> Result<Vec<String>> {
        let request = IstioCertificateRequest {
            csr: csr_pem.to_owned(),
            validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        };
        let host = match &self.server_name {
            ServerName::DnsName(d) => d.as_ref().to_owned(),
            other => format!("{other:?}"),
        };
        let authority = format!("{host}:{}", self.addr.port());
        let bearer = format!("Bearer {token}");
        let mut metadata = vec![("authorization", bearer.as_str())];
        if let Some(id) = &self.cluster_id {
            metadata.push(("clusterid", id.as_str()));
        }
        let call = async {
            let tcp = TcpStream::connect(self.addr)
                .await
                .map_err(Error::io(format!("connect to istiod at {}", self.addr)))?;
            let tls = TlsConnector::from(self.tls.clone())
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(Error::io(format!(
                    "TLS handshake with istiod at {}",
                    self.addr
                )))?;
            let response: IstioCertificateResponse = grpc::unary(
                tls,
                &authority,
                CREATE_CERTIFICATE_PATH,
                &metadata,
                &request,
            )
            .await?;
            Ok(response.cert_chain)
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Timeout(format!("CreateCertificate at {}", self.addr)))?
    }
}

/// A workload certificate istiod issued, with its key: what a sidecar holds.
#[derive(Clone)]
pub struct WorkloadCert {
    /// The leaf, then the chain istiod appends (never empty).
    chain: Vec<CertificateDer<'static>>,
    /// The roots istiod sent as the last element.
    roots: Vec<CertificateDer<'static>>,
    /// The leaf's SPIFFE ID.
    pub spiffe_id: String,
    /// The leaf's NotAfter.
    pub not_after: OffsetDateTime,
    key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCert")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain", &self.chain.len())
            .field("roots", &self.roots.len())
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl WorkloadCert {
    /// Interprets a `CreateCertificate` answer for the key `key_pkcs8` (DER) whose raw public
    /// key is `public_key_raw`: at least a leaf and the roots; the leaf must carry that key and
    /// a SPIFFE ID.
    pub fn from_response(
        cert_chain: &[String],
        key_pkcs8: Vec<u8>,
        public_key_raw: &[u8],
    ) -> Result<Self> {
        let [certs @ .., last] = cert_chain else {
            return Err(Error::Certificate("istiod sent an empty chain".into()));
        };
        if certs.is_empty() {
            return Err(Error::Certificate(
                "istiod sent a single element; a leaf and the roots were expected".into(),
            ));
        }
        let mut chain = Vec::new();
        for (i, pem) in certs.iter().enumerate() {
            chain.extend(parse_pem_certs(
                pem.as_bytes(),
                &format!("cert_chain[{i}]"),
            )?);
        }
        let roots = parse_pem_certs(last.as_bytes(), "the roots (last element of cert_chain)")?;
        let leaf = federator_core::cert::parse_der(&chain[0])
            .map_err(|e| Error::Certificate(format!("the leaf: {e}")))?;
        if leaf.public_key().subject_public_key.data.as_ref() != public_key_raw {
            return Err(Error::Certificate(
                "the leaf does not carry the key of the CSR".into(),
            ));
        }
        let (_, not_after) = federator_core::cert::validity(&leaf);
        let spiffe_id = crate::verifier::spiffe_id(&chain[0])?;
        Ok(Self {
            chain,
            roots,
            spiffe_id,
            not_after,
            key_pkcs8,
        })
    }

    /// The leaf, then the chain istiod appended (its `cert-chain.pem`: the cluster CA first).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The roots istiod sent as the last element of its answer (its whole `root-cert.pem`).
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The certificates istiod appended after the leaf (the cluster CA first).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.chain[1..]
    }

    /// The private key, for a rustls config.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// The leaf and its chain as DER byte vectors (for `federator_core::verify`).
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        self.chain.iter().map(|c| c.to_vec()).collect()
    }
}
