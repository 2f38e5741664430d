//! The root material of the federation and the signer that uses it.
//!
//! Stored in the hub Secret `federator-system/federator-roots`:
//!
//! * `local`: one self-signed root per trust domain, keys `<td>.crt` and `<td>.key`,
//!   created on first use ([`RootStore::ensure_trust_domains`]);
//! * `import`: one existing CA for every trust domain, keys `ca.crt` (the CA, then its chain up
//!   to the root) and `ca.key`.
//!
//! The annotation `federator.io/root-backend` records which. Private keys never leave this
//! module except into that Secret.

use std::collections::BTreeMap;

use federator_api::names;
use federator_core::bundle::TrustBundle;
use federator_core::ca::{IssuingCa, RootOptions};
use federator_core::csr::CsrInfo;
use federator_core::identity::TrustDomain;
use federator_core::policy::{ClusterCaRequest, IssuedCa, SigningPolicy};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use time::OffsetDateTime;

use crate::{Error, Result};

/// Annotation naming the backend of the roots Secret.
pub const BACKEND_ANNOTATION: &str = "federator.io/root-backend";
const IMPORT_CERT: &str = "ca.crt";
const IMPORT_KEY: &str = "ca.key";

/// Which root backend a federation uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A generated root per trust domain.
    Local,
    /// One imported CA.
    Import,
}

impl Backend {
    /// The name used in the Federation spec and the Secret annotation.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Import => "import",
        }
    }
}

/// The CAs that sign cluster CAs.
#[derive(Debug)]
pub enum Signer {
    /// One root per trust domain.
    Local(BTreeMap<TrustDomain, IssuingCa>),
    /// One imported CA for all trust domains.
    Import(Box<IssuingCa>),
}

impl Signer {
    /// The issuing CA for a trust domain.
    pub fn issuer_for(&self, td: &TrustDomain) -> Result<&IssuingCa> {
        match self {
            Signer::Local(map) => map.get(td).ok_or_else(|| {
                Error::Refused(format!(
                    "no root for trust domain {td} yet; `federator serve` creates it"
                ))
            }),
            Signer::Import(ca) => Ok(ca),
        }
    }

    /// Signs a cluster CA under the policy.
    pub fn sign(
        &self,
        policy: &SigningPolicy,
        csr: &CsrInfo,
        request: &ClusterCaRequest,
    ) -> Result<IssuedCa> {
        let issuer = self.issuer_for(&request.trust_domain)?;
        Ok(policy.sign(issuer, csr, request, OffsetDateTime::now_utc())?)
    }

    /// The roots: (trust domain, or `*` for an imported CA serving all, SHA-256 fingerprint).
    pub fn root_fingerprints(&self) -> Vec<(String, String)> {
        match self {
            Signer::Local(map) => map
                .iter()
                .map(|(td, ca)| {
                    (
                        td.to_string(),
                        federator_core::cert::fingerprint(ca.root_der()),
                    )
                })
                .collect(),
            Signer::Import(ca) => {
                vec![("*".into(), federator_core::cert::fingerprint(ca.root_der()))]
            }
        }
    }

    /// The bundle for a set of trust domains: each one's root.
    pub fn bundle_for<'a>(
        &self,
        tds: impl IntoIterator<Item = &'a TrustDomain>,
    ) -> Result<TrustBundle> {
        let mut bundle = TrustBundle::new();
        for td in tds {
            bundle.add(td, self.issuer_for(td)?.root_der().to_vec())?;
        }
        Ok(bundle)
    }
}

/// Access to the roots Secret.
#[derive(Clone)]
pub struct RootStore {
    api: Api<Secret>,
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .as_ref()
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}

impl RootStore {
    /// A store over the hub cluster.
    pub fn new(hub: Client) -> Self {
        Self {
            api: Api::namespaced(hub, names::NAMESPACE),
        }
    }

    async fn get(&self) -> Result<Option<Secret>> {
        self.api
            .get_opt(names::ROOTS_SECRET)
            .await
            .map_err(|e| Error::kube("read the roots Secret", e))
    }

    /// The backend recorded in the Secret, if it exists.
    pub async fn backend(&self) -> Result<Option<Backend>> {
        self.get().await?.map(|s| backend_of(&s)).transpose()
    }

    /// Loads the signer.
    pub async fn load(&self) -> Result<Signer> {
        let secret = self.get().await?.ok_or_else(|| {
            Error::Refused("the hub has no roots yet: run `federator init` first".into())
        })?;
        signer_from(&secret)
    }

    /// Creates the Secret for a new federation. Refuses when it exists with other material.
    /// Returns whether it was created.
    pub async fn initialise(
        &self,
        backend: &Backend,
        material: BTreeMap<String, Vec<u8>>,
    ) -> Result<bool> {
        if let Some(existing) = self.get().await? {
            let existing_backend = backend_of(&existing)?;
            if &existing_backend != backend {
                return Err(Error::Refused(format!(
                    "this hub already has a {} root; refusing to switch to {} (that would break every member's trust)",
                    existing_backend.as_str(),
                    backend.as_str()
                )));
            }
            if *backend == Backend::Import {
                let data = secret_data(&existing);
                if data.get(IMPORT_CERT) != material.get(IMPORT_CERT) {
                    let have = data
                        .get(IMPORT_CERT)
                        .and_then(|c| {
                            federator_core::cert::parse_pem_certificates(c, IMPORT_CERT).ok()
                        })
                        .and_then(|c| c.first().map(|d| federator_core::cert::fingerprint(d)))
                        .unwrap_or_default();
                    return Err(Error::Refused(format!(
                        "this hub already has a different imported root (sha256 {have}); refusing to replace it"
                    )));
                }
            }
            return Ok(false);
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(names::ROOTS_SECRET.to_owned()),
                namespace: Some(names::NAMESPACE.to_owned()),
                labels: Some(super::kube::managed_labels()),
                annotations: Some(
                    [(BACKEND_ANNOTATION.to_owned(), backend.as_str().to_owned())].into(),
                ),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(
                material
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v)))
                    .collect(),
            ),
            ..Secret::default()
        };
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(Error::kube("create the roots Secret", e)),
        }
    }

    /// With the local backend, creates roots for trust domains that have none, with
    /// optimistic concurrency (safe with several hub replicas). Returns the trust domains
    /// created.
    pub async fn ensure_trust_domains(
        &self,
        tds: &[TrustDomain],
        opts: &RootOptions,
    ) -> Result<Vec<TrustDomain>> {
        for _attempt in 0..5 {
            let secret = self.get().await?.ok_or_else(|| {
                Error::Refused("the hub has no roots yet: run `federator init` first".into())
            })?;
            if backend_of(&secret)? != Backend::Local {
                return Ok(Vec::new());
            }
            let mut data = secret_data(&secret);
            let mut created = Vec::new();
            for td in tds {
                if !data.contains_key(&cert_key(td)) {
                    let root = IssuingCa::create_root(
                        &RootOptions {
                            common_name: format!("federator root CA for {td}"),
                            ..opts.clone()
                        },
                        OffsetDateTime::now_utc(),
                    )?;
                    data.insert(cert_key(td), root.cert_pem().into_bytes());
                    data.insert(key_key(td), root.key().to_pkcs8_pem().into_bytes());
                    created.push(td.clone());
                }
            }
            if created.is_empty() {
                return Ok(created);
            }
            let mut updated = secret.clone();
            updated.data = Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
            match self
                .api
                .replace(names::ROOTS_SECRET, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => return Ok(created),
                Err(kube::Error::Api(e)) if e.code == 409 => continue, // another replica won; re-read
                Err(e) => return Err(Error::kube("update the roots Secret", e)),
            }
        }
        Err(Error::Refused(
            "the roots Secret keeps changing under us; retry".into(),
        ))
    }
}

/// The Secret data for a local root of a trust domain.
pub fn local_material(td: &TrustDomain, root: &IssuingCa) -> BTreeMap<String, Vec<u8>> {
    [
        (cert_key(td), root.cert_pem().into_bytes()),
        (key_key(td), root.key().to_pkcs8_pem().into_bytes()),
    ]
    .into()
}

/// The Secret data for an imported CA.
pub fn import_material(cert_pem: &[u8], key_pem: &[u8]) -> BTreeMap<String, Vec<u8>> {
    [
        (IMPORT_CERT.to_owned(), cert_pem.to_vec()),
        (IMPORT_KEY.to_owned(), key_pem.to_vec()),
    ]
    .into()
}

fn cert_key(td: &TrustDomain) -> String {
    format!("{td}.crt")
}

fn key_key(td: &TrustDomain) -> String {
    format!("{td}.key")
}

fn backend_of(secret: &Secret) -> Result<Backend> {
    let value = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BACKEND_ANNOTATION))
        .map(String::as_str);
    match value {
        Some("local") => Ok(Backend::Local),
        Some("import") => Ok(Backend::Import),
        other => Err(Error::Refused(format!(
            "the roots Secret {}/{} has an unknown backend {other:?}",
            names::NAMESPACE,
            names::ROOTS_SECRET
        ))),
    }
}

fn signer_from(secret: &Secret) -> Result<Signer> {
    let data = secret_data(secret);
    let now = OffsetDateTime::now_utc();
    match backend_of(secret)? {
        Backend::Import => {
            let cert = data
                .get(IMPORT_CERT)
                .ok_or_else(|| Error::Refused("roots Secret lacks ca.crt".into()))?;
            let key = data
                .get(IMPORT_KEY)
                .ok_or_else(|| Error::Refused("roots Secret lacks ca.key".into()))?;
            Ok(Signer::Import(Box::new(IssuingCa::import(cert, key, now)?)))
        }
        Backend::Local => {
            let mut map = BTreeMap::new();
            for (k, cert) in &data {
                let Some(td) = k.strip_suffix(".crt") else {
                    continue;
                };
                let td = TrustDomain::new(td)?;
                let key = data.get(&key_key(&td)).ok_or_else(|| {
                    Error::Refused(format!("roots Secret lacks the key for trust domain {td}"))
                })?;
                map.insert(td, IssuingCa::import(cert, key, now)?);
            }
            Ok(Signer::Local(map))
        }
    }
}
