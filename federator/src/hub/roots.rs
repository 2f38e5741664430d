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

use federator_api::hub::{FederationSpec, VaultBackend};
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

use super::vault::{VaultAuth, VaultConfig, VaultSigner};
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
    /// Vault / OpenBao PKI; the Secret holds only the hub's Vault credential.
    Vault,
}

impl Backend {
    /// The name used in the Federation spec and the Secret annotation.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Import => "import",
            Backend::Vault => "vault",
        }
    }
}

/// The CAs that sign cluster CAs.
#[derive(Debug)]
pub enum Signer {
    /// One root per trust domain, plus the previous root of each trust domain in rotation.
    Local(LocalRoots),
    /// One imported CA for all trust domains.
    Import(Box<IssuingCa>),
    /// Vault signs for all trust domains.
    Vault(Box<VaultSigner>),
}

/// The local backend's roots.
#[derive(Debug, Default)]
pub struct LocalRoots {
    /// The signing root of each trust domain.
    pub active: BTreeMap<TrustDomain, IssuingCa>,
    /// Trust domains in rotation: the previous root (still trusted) and the rotation's state.
    pub rotating: BTreeMap<TrustDomain, (Vec<u8>, Rotation)>,
}

/// A root rotation in progress (stored as JSON in the roots Secret, `<td>.rotation`).
///
/// Phases, derived from the federation's state by `serve`: every member trusts both roots →
/// the trust domain's members are re-signed under the new root → after `drain_seconds` (the
/// time workload certificates issued under the old root need to expire) the old root leaves
/// the bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long to keep trusting the old root once every member runs on the new one.
    pub drain_seconds: u64,
    /// When every member of the trust domain was running on the new root (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resigned_at: Option<String>,
}

impl Signer {
    /// The root that anchors a trust domain (DER).
    pub fn root_der_for(&self, td: &TrustDomain) -> Result<&[u8]> {
        match self {
            Signer::Local(roots) => {
                roots
                    .active
                    .get(td)
                    .map(IssuingCa::root_der)
                    .ok_or_else(|| {
                        Error::Refused(format!(
                            "no root for trust domain {td} yet; `federator serve` creates it"
                        ))
                    })
            }
            Signer::Import(ca) => Ok(ca.root_der()),
            Signer::Vault(v) => Ok(v.root_der()),
        }
    }

    /// Signs a cluster CA under the policy (with Vault, Vault signs the policy's fields).
    pub async fn sign(
        &self,
        policy: &SigningPolicy,
        csr: &CsrInfo,
        request: &ClusterCaRequest,
    ) -> Result<IssuedCa> {
        match self {
            Signer::Local(roots) => {
                let issuer = roots.active.get(&request.trust_domain).ok_or_else(|| {
                    Error::Refused(format!(
                        "no root for trust domain {} yet",
                        request.trust_domain
                    ))
                })?;
                Ok(policy.sign(issuer, csr, request, OffsetDateTime::now_utc())?)
            }
            Signer::Import(ca) => Ok(policy.sign(ca, csr, request, OffsetDateTime::now_utc())?),
            Signer::Vault(v) => v.sign(policy, csr, request).await,
        }
    }

    /// The roots: (trust domain, or `*` for a single issuer serving all, SHA-256 fingerprint).
    pub fn root_fingerprints(&self) -> Vec<(String, String)> {
        match self {
            Signer::Local(roots) => roots
                .active
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
            Signer::Vault(v) => vec![("*".into(), federator_core::cert::fingerprint(v.root_der()))],
        }
    }

    /// The bundle for a set of trust domains: each one's root.
    pub fn bundle_for<'a>(
        &self,
        tds: impl IntoIterator<Item = &'a TrustDomain>,
    ) -> Result<TrustBundle> {
        let mut bundle = TrustBundle::new();
        for td in tds {
            bundle.add(td, self.root_der_for(td)?.to_vec())?;
            if let Signer::Local(roots) = self
                && let Some((previous, _)) = roots.rotating.get(td)
            {
                bundle.add(td, previous.clone())?;
            }
        }
        Ok(bundle)
    }

    /// Trust domains in rotation: the previous root (DER) and the state (local backend only).
    pub fn rotations(&self) -> Vec<(TrustDomain, Vec<u8>, Rotation)> {
        match self {
            Signer::Local(roots) => roots
                .rotating
                .iter()
                .map(|(td, (prev, r))| (td.clone(), prev.clone(), r.clone()))
                .collect(),
            _ => Vec::new(),
        }
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

    /// The Secret's resourceVersion: changes whenever the roots or a rotation change.
    pub async fn version(&self) -> Result<String> {
        Ok(self
            .get()
            .await?
            .and_then(|s| s.metadata.resource_version)
            .unwrap_or_default())
    }

    /// Loads the signer. With the Vault backend this logs in to Vault with the stored
    /// credential and reads the issuer.
    pub async fn load(&self, spec: &FederationSpec) -> Result<Signer> {
        let secret = self.get().await?.ok_or_else(|| {
            Error::Refused("the hub has no roots yet: run `federator init` first".into())
        })?;
        if backend_of(&secret)? == Backend::Vault {
            let vault = spec.root.vault.as_ref().ok_or_else(|| {
                Error::Refused(
                    "the Federation's root backend is vault but it has no vault settings".into(),
                )
            })?;
            let cfg = vault_config(vault, &secret_data(&secret))?;
            return Ok(Signer::Vault(Box::new(VaultSigner::connect(cfg).await?)));
        }
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

    /// Applies `change` to the Secret's data with optimistic concurrency (safe with several
    /// hub replicas): re-reads and retries on a conflict. `change` returns whether it changed
    /// anything, and a result.
    async fn update_data<R>(
        &self,
        mut change: impl FnMut(&mut BTreeMap<String, Vec<u8>>, &Backend) -> Result<(bool, R)>,
    ) -> Result<R> {
        for _attempt in 0..5 {
            let secret = self.get().await?.ok_or_else(|| {
                Error::Refused("the hub has no roots yet: run `federator init` first".into())
            })?;
            let backend = backend_of(&secret)?;
            let mut data = secret_data(&secret);
            let (changed, result) = change(&mut data, &backend)?;
            if !changed {
                return Ok(result);
            }
            let mut updated = secret.clone();
            updated.data = Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
            match self
                .api
                .replace(names::ROOTS_SECRET, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => return Ok(result),
                Err(kube::Error::Api(e)) if e.code == 409 => continue, // another replica won; re-read
                Err(e) => return Err(Error::kube("update the roots Secret", e)),
            }
        }
        Err(Error::Refused(
            "the roots Secret keeps changing under us; retry".into(),
        ))
    }

    /// With the local backend, creates roots for trust domains that have none. Returns the
    /// trust domains created.
    pub async fn ensure_trust_domains(
        &self,
        tds: &[TrustDomain],
        opts: &RootOptions,
    ) -> Result<Vec<TrustDomain>> {
        self.update_data(|data, backend| {
            let mut created = Vec::new();
            if *backend != Backend::Local {
                return Ok((false, created));
            }
            for td in tds {
                if !data.contains_key(&cert_key(td)) {
                    let root = new_root(td, opts)?;
                    data.insert(cert_key(td), root.cert_pem().into_bytes());
                    data.insert(key_key(td), root.key().to_pkcs8_pem().into_bytes());
                    created.push(td.clone());
                }
            }
            Ok((!created.is_empty(), created))
        })
        .await
    }

    /// Starts rotating a trust domain's root (local backend): a new root signs from now on,
    /// the current one stays trusted until `serve` has moved every member of the trust domain
    /// to the new root and `drain` has passed. Returns the new root's fingerprint.
    pub async fn start_rotation(
        &self,
        td: &TrustDomain,
        opts: &RootOptions,
        drain: std::time::Duration,
    ) -> Result<String> {
        self.update_data(|data, backend| {
            if *backend != Backend::Local {
                return Err(Error::Refused(format!(
                    "root rotation is managed by federator for the local backend only; with {} rotate the root in your PKI",
                    backend.as_str()
                )));
            }
            if data.contains_key(&rotation_key(td)) {
                return Err(Error::Refused(format!(
                    "trust domain {td} is already rotating its root; see `federator status`"
                )));
            }
            let current = data
                .get(&cert_key(td))
                .cloned()
                .ok_or_else(|| Error::Usage(format!("trust domain {td} has no root")))?;
            let root = new_root(td, opts)?;
            let rotation = Rotation {
                started_at: federator_core::cert::rfc3339(OffsetDateTime::now_utc()),
                drain_seconds: drain.as_secs(),
                resigned_at: None,
            };
            data.insert(previous_key(td), current);
            data.insert(cert_key(td), root.cert_pem().into_bytes());
            data.insert(key_key(td), root.key().to_pkcs8_pem().into_bytes());
            data.insert(
                rotation_key(td),
                serde_json::to_vec(&rotation).map_err(|e| Error::Encode(e.to_string()))?,
            );
            Ok((true, federator_core::cert::fingerprint(root.root_der())))
        })
        .await
    }

    /// Records that every member of a rotating trust domain runs on the new root.
    pub async fn mark_resigned(&self, td: &TrustDomain, at: OffsetDateTime) -> Result<()> {
        self.update_data(|data, _| {
            let Some(state) = data.get(&rotation_key(td)) else {
                return Ok((false, ()));
            };
            let mut rotation: Rotation = serde_json::from_slice(state)
                .map_err(|e| Error::Refused(format!("malformed rotation state: {e}")))?;
            if rotation.resigned_at.is_some() {
                return Ok((false, ()));
            }
            rotation.resigned_at = Some(federator_core::cert::rfc3339(at));
            data.insert(
                rotation_key(td),
                serde_json::to_vec(&rotation).map_err(|e| Error::Encode(e.to_string()))?,
            );
            Ok((true, ()))
        })
        .await
    }

    /// Ends a rotation: the previous root is dropped (and so leaves every bundle).
    pub async fn finish_rotation(&self, td: &TrustDomain) -> Result<()> {
        self.update_data(|data, _| {
            let had = data.remove(&previous_key(td)).is_some();
            let had_state = data.remove(&rotation_key(td)).is_some();
            Ok((had || had_state, ()))
        })
        .await
    }
}

/// The options for roots the local backend makes, from the Federation's settings.
pub fn local_root_options(spec: &FederationSpec) -> Result<RootOptions> {
    let s = &spec.local_roots;
    let mut o = RootOptions::default();
    if !s.key_algorithm.is_empty() {
        o.key_algorithm = s.key_algorithm.parse()?;
    }
    if !s.ttl.is_empty() {
        o.ttl = federator_core::duration::parse(&s.ttl)?;
    }
    if !s.organization.is_empty() {
        o.organization.clone_from(&s.organization);
    }
    Ok(o)
}

fn new_root(td: &TrustDomain, opts: &RootOptions) -> Result<IssuingCa> {
    Ok(IssuingCa::create_root(
        &RootOptions {
            common_name: format!("federator root CA for {td}"),
            ..opts.clone()
        },
        OffsetDateTime::now_utc(),
    )?)
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

fn previous_key(td: &TrustDomain) -> String {
    format!("{td}.previous")
}

fn rotation_key(td: &TrustDomain) -> String {
    format!("{td}.rotation")
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
        Some("vault") => Ok(Backend::Vault),
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
        Backend::Vault => Err(Error::Refused(
            "the Vault signer is loaded with RootStore::load".into(),
        )),
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
            let mut roots = LocalRoots::default();
            for (k, cert) in &data {
                let Some(td) = k.strip_suffix(".crt") else {
                    continue;
                };
                let td = TrustDomain::new(td)?;
                let key = data.get(&key_key(&td)).ok_or_else(|| {
                    Error::Refused(format!("roots Secret lacks the key for trust domain {td}"))
                })?;
                if let (Some(prev), Some(state)) =
                    (data.get(&previous_key(&td)), data.get(&rotation_key(&td)))
                {
                    let der = federator_core::cert::parse_pem_certificates(prev, "previous root")?
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::Refused(format!("empty previous root for {td}")))?;
                    let rotation: Rotation = serde_json::from_slice(state).map_err(|e| {
                        Error::Refused(format!("malformed rotation state for {td}: {e}"))
                    })?;
                    roots.rotating.insert(td.clone(), (der, rotation));
                }
                roots.active.insert(td, IssuingCa::import(cert, key, now)?);
            }
            Ok(Signer::Local(roots))
        }
    }
}

/// Secret keys of the hub's Vault credential.
pub const VAULT_TOKEN_KEY: &str = "vault-token";
/// AppRole role ID.
pub const VAULT_ROLE_ID_KEY: &str = "vault-role-id";
/// AppRole secret ID.
pub const VAULT_SECRET_ID_KEY: &str = "vault-secret-id";

/// The Secret data for the Vault backend: only the hub's credential.
pub fn vault_material(auth: &VaultAuth) -> BTreeMap<String, Vec<u8>> {
    match auth {
        VaultAuth::Token { token } => {
            [(VAULT_TOKEN_KEY.to_owned(), token.as_bytes().to_vec())].into()
        }
        VaultAuth::AppRole {
            role_id, secret_id, ..
        } => [
            (VAULT_ROLE_ID_KEY.to_owned(), role_id.as_bytes().to_vec()),
            (
                VAULT_SECRET_ID_KEY.to_owned(),
                secret_id.as_bytes().to_vec(),
            ),
        ]
        .into(),
        VaultAuth::Kubernetes { .. } => BTreeMap::new(),
    }
}

/// The Vault settings of a Federation, with the credential from the roots Secret.
pub fn vault_config(v: &VaultBackend, data: &BTreeMap<String, Vec<u8>>) -> Result<VaultConfig> {
    let get = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(b).trim().to_owned())
            .ok_or_else(|| {
                Error::Refused(format!(
                    "the roots Secret lacks {k} for Vault {} auth",
                    v.auth
                ))
            })
    };
    let mount_or = |default: &str| {
        if v.auth_mount.is_empty() {
            default.to_owned()
        } else {
            v.auth_mount.clone()
        }
    };
    let auth = match v.auth.as_str() {
        "token" => VaultAuth::Token {
            token: get(VAULT_TOKEN_KEY)?,
        },
        "approle" => VaultAuth::AppRole {
            mount: mount_or("approle"),
            role_id: get(VAULT_ROLE_ID_KEY)?,
            secret_id: get(VAULT_SECRET_ID_KEY)?,
        },
        "kubernetes" => VaultAuth::Kubernetes {
            mount: mount_or("kubernetes"),
            role: v.role.clone(),
            jwt_file: if v.jwt_path.is_empty() {
                DEFAULT_SERVICE_ACCOUNT_TOKEN.into()
            } else {
                v.jwt_path.clone().into()
            },
        },
        other => {
            return Err(Error::Refused(format!(
                "unknown Vault auth method {other:?}: use token, approle or kubernetes"
            )));
        }
    };
    Ok(VaultConfig {
        address: v.address.clone(),
        mount: v.mount.clone(),
        issuer: (!v.issuer.is_empty()).then(|| v.issuer.clone()),
        namespace: (!v.namespace.is_empty()).then(|| v.namespace.clone()),
        auth,
        ca_pem: (!v.ca_pem.is_empty()).then(|| v.ca_pem.clone()),
    })
}

/// Where a pod's ServiceAccount token is mounted.
pub const DEFAULT_SERVICE_ACCOUNT_TOKEN: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";
