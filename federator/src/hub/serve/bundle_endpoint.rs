//! The SPIFFE bundle endpoint (`serve --bundle-endpoint-addr`): every replica, leader and
//! standbys alike, serves the federation's own trust bundles as SPIFFE bundles so that SPIRE
//! (or any SPIFFE federation member) can `federates_with` a trust domain of the federation.
//!
//! * **What.** One SPIFFE bundle per trust domain of the federation (SPIFFE Trust Domain and
//!   Bundle §4, served as SPIFFE Federation §5 describes), at `/<trust domain>`; `/` answers
//!   with the bundle when the federation has a single trust domain. The roots are those every
//!   member trusts for that domain (both roots during a rotation), `spiffe_sequence` is the
//!   federation's bundle generation (it increases on every change of the bundle) and
//!   `spiffe_refresh_hint` is `--bundle-refresh-hint`.
//! * **From where.** The leader writes the bundle into the `Federation` status
//!   (`status.published`); every replica watches that object, so a standby serves the same
//!   document as the leader without holding the roots.
//! * **How.** `https_web` (SPIFFE Federation §5.2.1): TLS with a serving certificate the user
//!   supplies (`--bundle-endpoint-cert`/`--bundle-endpoint-key`, e.g. a cert-manager
//!   Certificate's Secret mounted in the Pod); the files are read again every few seconds and a
//!   changed pair is served from then on (a broken pair is logged and the previous one kept).
//!   `https_spiffe` (§5.2.2): TLS with an X509-SVID of the federation's own CA for the
//!   configured SPIFFE ID (`--bundle-endpoint-spiffe-id`), which the leader keeps in the Secret
//!   `federator-bundle-endpoint` ([`super::endpoint_svid`]); every replica watches that Secret
//!   and serves what it holds (a broken one is logged and the previous one kept). Peers
//!   authenticate it with the bundle they fetched from here last.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use federator_api::hub::{Federation, FederationStatus};
use federator_api::names;
use federator_api::serving::{Handler, Reply};
use federator_core::bundle::TrustBundle;
use federator_core::identity::{SpiffeId, TrustDomain};
use futures::StreamExt;
use http::StatusCode;
use kube::Client;
use kube::runtime::watcher::{self, Event};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use crate::{Error, Result};

/// `serve`'s bundle endpoint options.
#[derive(Clone, Debug)]
pub struct BundleEndpointOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// What it serves with.
    pub serving: Serving,
    /// `spiffe_refresh_hint` of the served bundles.
    pub refresh_hint: Duration,
}

/// How the endpoint authenticates itself (SPIFFE Federation §5.2).
#[derive(Clone, Debug)]
pub enum Serving {
    /// `https_web`: a serving certificate from files.
    Web {
        /// The serving certificate (PEM, leaf first, then its chain).
        cert: PathBuf,
        /// Its private key (PEM).
        key: PathBuf,
    },
    /// `https_spiffe`: an X509-SVID of the federation's own CA.
    Spiffe {
        /// Its SPIFFE ID (in one of the federation's trust domains).
        id: SpiffeId,
        /// Its lifetime (issued again at half).
        ttl: Duration,
    },
}

impl Serving {
    /// The profile's name.
    pub fn profile(&self) -> &'static str {
        match self {
            Serving::Web { .. } => "https_web",
            Serving::Spiffe { .. } => "https_spiffe",
        }
    }
}

/// How often the certificate files are read again.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The content type of a SPIFFE bundle (a JWK set).
const JSON: &str = "application/json";

/// The documents the endpoint serves, per trust domain (pure): every trust domain of
/// `status.published`, as a SPIFFE bundle with the bundle generation as its sequence.
pub fn documents(
    status: &FederationStatus,
    refresh_hint: Duration,
) -> federator_core::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in &status.published {
        let td = TrustDomain::new(&entry.trust_domain)?;
        let bundle = TrustBundle::from_domain_pems([(&td, entry.roots_pem.as_str())])?;
        let mut doc = bundle.spiffe_bundle(&td, status.bundle_generation)?;
        doc.spiffe_refresh_hint = Some(refresh_hint.as_secs().max(1));
        // Serializing a struct of strings and numbers cannot fail.
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        out.insert(td.to_string(), text + "\n");
    }
    Ok(out)
}

/// What the endpoint currently serves: `None` until the Federation status was read.
#[derive(Debug, Default)]
pub struct Published(RwLock<Option<BTreeMap<String, String>>>);

impl Published {
    fn set(&self, docs: BTreeMap<String, String>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(docs);
    }
}

fn text(status: StatusCode, body: String) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body,
    }
}

impl Handler for Published {
    fn answer(&self, path: &str) -> Reply {
        let docs = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(docs) = docs.as_ref() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the federation's bundle has not been read yet\n".into(),
            );
        };
        let name = path.trim_start_matches('/');
        let doc = if name.is_empty() && docs.len() == 1 {
            docs.values().next()
        } else {
            docs.get(name)
        };
        match doc {
            Some(doc) => Reply {
                status: StatusCode::OK,
                content_type: JSON,
                body: doc.clone(),
            },
            None => {
                let served: Vec<String> = docs.keys().map(|td| format!("/{td}")).collect();
                text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no bundle at {path}; this endpoint serves {}\n",
                        if served.is_empty() {
                            "no trust domain yet".to_owned()
                        } else {
                            served.join(", ")
                        }
                    ),
                )
            }
        }
    }
}

/// The serving certificate, read from its files and read again when they change.
#[derive(Debug)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Vec<u8>, Arc<CertifiedKey>)>,
}

/// A serving certificate (PEM chain, leaf first) and its key (PEM) as rustls serves them,
/// checked to match.
fn certified(cert_pem: &[u8], key_pem: &[u8]) -> std::result::Result<CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("the certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate".into());
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| format!("the key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(certified)
}

impl CertFiles {
    fn read(cert: &std::path::Path, key: &std::path::Path) -> Result<(Vec<u8>, CertifiedKey)> {
        let what = |p: &std::path::Path, e: &dyn std::fmt::Display| {
            Error::Usage(format!("bundle endpoint certificate {}: {e}", p.display()))
        };
        let cert_pem = std::fs::read(cert).map_err(|e| what(cert, &e))?;
        let key_pem = std::fs::read(key).map_err(|e| what(key, &e))?;
        let certified = certified(&cert_pem, &key_pem).map_err(|e| {
            Error::Usage(format!(
                "bundle endpoint certificate {} and key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
        let mut stamp = cert_pem;
        stamp.extend_from_slice(&key_pem);
        Ok((stamp, certified))
    }

    fn load(cert: PathBuf, key: PathBuf) -> Result<Self> {
        let (stamp, certified) = Self::read(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: RwLock::new((stamp, Arc::new(certified))),
        })
    }

    /// Reads the files again; serves the new pair when it changed and is valid.
    fn reload(&self) {
        let (stamp, certified) = match Self::read(&self.cert, &self.key) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "bundle endpoint: cannot read the serving certificate; keeping the previous one");
                return;
            }
        };
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != stamp {
            info!(cert = %self.cert.display(), "bundle endpoint: serving the changed certificate");
            *current = (stamp, Arc::new(certified));
        }
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .1
                .clone(),
        )
    }
}

/// The X509-SVID from the Secret the leader keeps (`https_spiffe`): none until it was read.
#[derive(Debug, Default)]
struct SecretSvid(RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesServerCert for SecretSvid {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Keeps `svid` equal to what the Secret `federator-bundle-endpoint` holds (a broken or
/// deleted Secret leaves the previous SVID served: the leader writes a new one).
async fn follow_svid(hub: Client, svid: Arc<SecretSvid>) {
    use federator_api::plumbing::secret_data;
    use k8s_openapi::api::core::v1::Secret;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(hub, names::NAMESPACE);
    let mut events = std::pin::pin!(watcher::watcher(
        secrets,
        federator_api::plumbing::by_name(names::BUNDLE_ENDPOINT_SECRET)
    ));
    let mut served: Option<BTreeMap<String, Vec<u8>>> = None;
    while let Some(event) = events.next().await {
        let secret = match event {
            Ok(Event::Apply(s) | Event::InitApply(s)) => s,
            Ok(Event::InitDone) => {
                if served.is_none() {
                    info!("bundle endpoint: waiting for the leader to issue its X509-SVID");
                }
                continue;
            }
            Ok(Event::Delete(_) | Event::Init) => continue,
            Err(e) => {
                warn!(error = %e, "bundle endpoint: watch on its SVID Secret failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let data = secret_data(&secret);
        if served.as_ref() == Some(&data) {
            continue;
        }
        let pem = |k: &str| data.get(k).map_or(&[][..], Vec::as_slice);
        match certified(
            pem(crate::hub::plan::endpoint_svid::CERT_KEY),
            pem(crate::hub::plan::endpoint_svid::KEY_KEY),
        ) {
            Ok(c) => {
                info!("bundle endpoint: serving the X509-SVID from its Secret");
                *svid
                    .0
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(c));
                served = Some(data);
            }
            Err(e) => {
                warn!(error = %e, "bundle endpoint: its SVID Secret is not usable; serving the previous SVID")
            }
        }
    }
}

/// The running endpoint; it stops when dropped.
pub struct BundleEndpoint {
    /// The address it listens on.
    pub addr: SocketAddr,
    _server: AbortOnDropHandle<()>,
    /// Keeps the serving credentials current: the files read again, or the SVID Secret watched.
    _credentials: AbortOnDropHandle<()>,
    _watch: AbortOnDropHandle<()>,
}

/// Starts the endpoint: fails at once on an unreadable certificate or a taken address.
pub async fn start(hub: Client, opts: &BundleEndpointOptions) -> Result<BundleEndpoint> {
    let (resolver, keep_current): (Arc<dyn ResolvesServerCert>, _) = match &opts.serving {
        Serving::Web { cert, key } => {
            let certs = Arc::new(CertFiles::load(cert.clone(), key.clone())?);
            let resolver = certs.clone();
            let reload = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RELOAD_EVERY).await;
                    certs.reload();
                }
            });
            (resolver as Arc<dyn ResolvesServerCert>, reload)
        }
        Serving::Spiffe { .. } => {
            let svid = Arc::new(SecretSvid::default());
            let follow = tokio::spawn(follow_svid(hub.clone(), svid.clone()));
            (svid as Arc<dyn ResolvesServerCert>, follow)
        }
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Usage(format!("bundle endpoint TLS: {e}")))?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let published = Arc::new(Published::default());
    let (addr, server) =
        federator_api::serving::serve_tls(opts.addr, Arc::new(tls), published.clone())
            .await
            .map_err(|e| {
                Error::Usage(format!(
                    "--bundle-endpoint-addr {}: cannot listen: {e}",
                    opts.addr
                ))
            })?;
    info!(%addr, profile = opts.serving.profile(), "serving the federation's SPIFFE bundles");
    let watch = tokio::spawn(follow_federation(hub, published, opts.refresh_hint));
    Ok(BundleEndpoint {
        addr,
        _server: server,
        _credentials: AbortOnDropHandle::new(keep_current),
        _watch: AbortOnDropHandle::new(watch),
    })
}

/// Keeps `published` equal to what the Federation's status publishes.
async fn follow_federation(hub: Client, published: Arc<Published>, refresh_hint: Duration) {
    let feds: kube::Api<Federation> = kube::Api::namespaced(hub, names::NAMESPACE);
    let mut events = std::pin::pin!(watcher::watcher(
        feds,
        federator_api::plumbing::by_name(names::FEDERATION)
    ));
    while let Some(event) = events.next().await {
        let status = match event {
            Ok(Event::Apply(f) | Event::InitApply(f)) => f.status.unwrap_or_default(),
            Ok(Event::Delete(_)) => FederationStatus::default(),
            Ok(Event::InitDone) => {
                // No Federation yet: nothing to serve, but say so with 404s, not 503s.
                if published.0.read().map(|d| d.is_none()).unwrap_or(false) {
                    published.set(BTreeMap::new());
                }
                continue;
            }
            Ok(Event::Init) => continue,
            Err(e) => {
                warn!(error = %e, "bundle endpoint: watch on the Federation failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match documents(&status, refresh_hint) {
            Ok(docs) => published.set(docs),
            Err(e) => {
                warn!(error = %e, "bundle endpoint: the Federation's published roots do not make a bundle; serving the previous one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_api::member::BundleEntry;

    fn root_pem(td: &str) -> String {
        let opts = federator_core::ca::RootOptions {
            common_name: format!("{td} root"),
            ..Default::default()
        };
        federator_core::ca::IssuingCa::create_root(&opts, time::OffsetDateTime::now_utc())
            .unwrap()
            .cert_pem()
    }

    fn status(entries: &[(&str, String)], generation: i64) -> FederationStatus {
        FederationStatus {
            published: entries
                .iter()
                .map(|(td, pem)| BundleEntry {
                    trust_domain: (*td).into(),
                    roots_pem: pem.clone(),
                })
                .collect(),
            bundle_generation: generation,
            ..Default::default()
        }
    }

    #[test]
    fn one_spiffe_bundle_per_trust_domain_that_reads_back() {
        let (a, b) = (root_pem("a.example"), root_pem("b.example"));
        let docs = documents(
            &status(&[("a.example", a.clone()), ("b.example", b)], 7),
            Duration::from_secs(300),
        )
        .unwrap();
        assert_eq!(docs.keys().collect::<Vec<_>>(), ["a.example", "b.example"]);
        let td = TrustDomain::new("a.example").unwrap();
        let back = federator_core::spiffe::parse_bundle(docs["a.example"].as_bytes(), &td).unwrap();
        assert_eq!(back.sequence, Some(7));
        assert_eq!(back.refresh_hint, Some(Duration::from_secs(300)));
        assert_eq!(
            back.x509_authorities,
            federator_core::cert::parse_pem_certificates(a.as_bytes(), "root").unwrap()
        );
    }

    #[test]
    fn paths_name_trust_domains_and_slash_serves_a_single_one() {
        let p = Published::default();
        assert_eq!(
            p.answer("/a.example").status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let a = root_pem("a.example");
        p.set(
            documents(
                &status(&[("a.example", a.clone())], 1),
                Duration::from_secs(60),
            )
            .unwrap(),
        );
        let r = p.answer("/a.example");
        assert_eq!((r.status, r.content_type), (StatusCode::OK, JSON));
        assert_eq!(p.answer("/").body, r.body, "one trust domain: / serves it");
        let nope = p.answer("/other.example");
        assert_eq!(nope.status, StatusCode::NOT_FOUND);
        assert!(nope.body.contains("serves /a.example"), "{}", nope.body);
        p.set(
            documents(
                &status(&[("a.example", a), ("b.example", root_pem("b.example"))], 2),
                Duration::from_secs(60),
            )
            .unwrap(),
        );
        let root = p.answer("/");
        assert_eq!(
            root.status,
            StatusCode::NOT_FOUND,
            "two trust domains: / is ambiguous"
        );
        assert!(
            root.body.contains("/a.example, /b.example"),
            "{}",
            root.body
        );
    }
}
