//! The roots Secret on the hub, read and written with optimistic concurrency (safe with
//! several hub replicas): [`RootStore`]. What the data holds, and how it changes, is
//! [`super::roots`].

use std::collections::BTreeMap;
use std::time::Duration;

use federator_api::hub::{FederationSpec, RootType};
use federator_api::{names, plumbing};
use federator_core::ca::RootOptions;
use federator_core::cert::fingerprint;
use federator_core::identity::TrustDomain;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use time::OffsetDateTime;
use tracing::warn;

use super::roots::{
    BACKEND_ANNOTATION, IMPORT_CERT, VaultRotation, abort_rotation, add_missing_roots,
    apply_record, backend_of, begin_import_rotation, begin_rotation, begin_vault_rotation,
    signer_from_material,
};
use super::signer::Signer;
use super::vault::VaultSigner;
use super::vault_config::{VaultConfig, vault_config};
use crate::hub::plan::rotation::{Record, Scope};
use crate::{Error, Result};

fn no_roots() -> Error {
    Error::Refused("the hub has no roots yet: run `federator init` first".into())
}

/// Access to the roots Secret.
#[derive(Clone)]
pub struct RootStore {
    api: Api<Secret>,
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
    /// credential and reads the issuer (during a rotation, the issuer it moves to).
    pub async fn load(&self, spec: &FederationSpec) -> Result<Signer> {
        let secret = self.get().await?.ok_or_else(no_roots)?;
        let backend = backend_of(&secret)?;
        let data = plumbing::secret_data(&secret);
        if backend == RootType::Vault {
            let mut cfg = Self::vault_settings(spec, &data)?;
            let rotation = VaultRotation::from_data(&data)?;
            if let Some(r) = &rotation {
                cfg.issuer = (!r.issuer.is_empty()).then(|| r.issuer.clone());
            }
            let mut signer = VaultSigner::connect(cfg).await?;
            if let Some(r) = &rotation {
                let previous_root = r.issuer_rotation(signer.root_der())?.previous_root;
                if !signer
                    .keep_previous(&r.previous_issuer, &previous_root)
                    .await?
                {
                    warn!(
                        issuer = %r.previous_issuer,
                        "the Vault issuer this rotation replaces is gone or no longer ends at the root the rotation recorded; the new issuer signs from now on, before every member may trust it"
                    );
                }
            }
            let rotation = rotation
                .map(|r| r.issuer_rotation(signer.root_der()))
                .transpose()?;
            return Ok(Signer::Vault(Box::new(signer), rotation));
        }
        signer_from_material(backend, &data, OffsetDateTime::now_utc())
    }

    fn vault_settings(
        spec: &FederationSpec,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<VaultConfig> {
        let vault = spec.root.vault.as_ref().ok_or_else(|| {
            Error::Refused(
                "the Federation's root backend is vault but it has no vault settings".into(),
            )
        })?;
        vault_config(vault, data)
    }

    /// The Vault settings and the hub's stored credential (for the CLI's checks of a new
    /// issuer), and the rotation in progress, if any.
    pub async fn vault_config(
        &self,
        spec: &FederationSpec,
    ) -> Result<(VaultConfig, Option<VaultRotation>)> {
        let secret = self.get().await?.ok_or_else(no_roots)?;
        let data = plumbing::secret_data(&secret);
        Ok((
            Self::vault_settings(spec, &data)?,
            VaultRotation::from_data(&data)?,
        ))
    }

    /// Creates the Secret for a new federation. Refuses when it exists with other material.
    /// Returns whether it was created.
    pub async fn initialise(
        &self,
        backend: RootType,
        material: BTreeMap<String, Vec<u8>>,
    ) -> Result<bool> {
        if let Some(existing) = self.get().await? {
            let existing_backend = backend_of(&existing)?;
            if existing_backend != backend {
                return Err(Error::Refused(format!(
                    "this hub already has a {existing_backend} root; refusing to switch to {backend} (that would break every member's trust)"
                )));
            }
            if backend == RootType::Import {
                let data = plumbing::secret_data(&existing);
                if data.get(IMPORT_CERT) != material.get(IMPORT_CERT) {
                    let have = data
                        .get(IMPORT_CERT)
                        .and_then(|c| {
                            federator_core::cert::parse_pem_certificates(c, IMPORT_CERT).ok()
                        })
                        .and_then(|c| c.first().map(|d| fingerprint(d)))
                        .unwrap_or_default();
                    return Err(Error::Refused(format!(
                        "this hub already has a different imported root (sha256 {have}); refusing to replace it"
                    )));
                }
            }
            return Ok(false);
        }
        let mut metadata = plumbing::metadata(names::ROOTS_SECRET, names::NAMESPACE);
        metadata.annotations =
            Some([(BACKEND_ANNOTATION.to_owned(), backend.as_str().to_owned())].into());
        let secret = Secret {
            metadata,
            type_: Some("Opaque".into()),
            data: Some(plumbing::byte_strings(material)),
            ..Secret::default()
        };
        plumbing::create_or_accept(&self.api, &PostParams::default(), &secret)
            .await
            .map_err(|e| Error::kube("create the roots Secret", e))
    }

    /// Applies `change` to the Secret's data with optimistic concurrency (safe with several
    /// hub replicas): re-reads and retries on a conflict. `change` returns whether it changed
    /// anything, and a result.
    async fn update_data<R>(
        &self,
        mut change: impl FnMut(&mut BTreeMap<String, Vec<u8>>, RootType) -> Result<(bool, R)>,
    ) -> Result<R> {
        for _attempt in 0..5 {
            let secret = self.get().await?.ok_or_else(no_roots)?;
            let backend = backend_of(&secret)?;
            let mut data = plumbing::secret_data(&secret);
            let (changed, result) = change(&mut data, backend)?;
            if !changed {
                return Ok(result);
            }
            let mut updated = secret.clone();
            updated.data = Some(plumbing::byte_strings(data));
            match self
                .api
                .replace(names::ROOTS_SECRET, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => return Ok(result),
                // Another replica won; re-read.
                Err(e) if plumbing::is_status(&e, 409) => continue,
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
            if backend != RootType::Local {
                return Ok((false, Vec::new()));
            }
            let created = add_missing_roots(data, tds, opts, OffsetDateTime::now_utc())?;
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
        drain: Duration,
    ) -> Result<String> {
        self.update_data(|data, backend| {
            begin_rotation(data, backend, td, opts, drain, OffsetDateTime::now_utc())
                .map(|fp| (true, fp))
        })
        .await
    }

    /// Starts rotating the imported CA to a new one (see [`begin_import_rotation`]). Returns
    /// the new root's fingerprint.
    pub async fn start_import_rotation(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        drain: Duration,
        must_outlive: OffsetDateTime,
    ) -> Result<String> {
        self.update_data(|data, backend| {
            let now = OffsetDateTime::now_utc();
            begin_import_rotation(data, backend, cert_pem, key_pem, drain, must_outlive, now)
                .map(|fp| (true, fp))
        })
        .await
    }

    /// Starts rotating the Vault issuer (see [`begin_vault_rotation`]).
    pub async fn start_vault_rotation(&self, to: &VaultRotation) -> Result<()> {
        self.update_data(|data, backend| {
            begin_vault_rotation(data, backend, to.clone()).map(|()| (true, ()))
        })
        .await
    }

    /// Aborts a rotation (see [`abort_rotation`]); returns the root returned to.
    pub async fn abort_rotation(&self, td: Option<&TrustDomain>) -> Result<String> {
        self.update_data(|data, backend| abort_rotation(data, backend, td).map(|fp| (true, fp)))
            .await
    }

    /// Records a step of a rotation.
    pub async fn record(&self, scope: &Scope, record: Record) -> Result<()> {
        self.update_data(|data, backend| Ok((apply_record(data, backend, scope, record)?, ())))
            .await
    }
}
