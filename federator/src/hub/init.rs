//! `federator init`: the hub's CRDs, namespace, Federation object and roots.

use std::time::Duration;

use federator_api::hub::{Federation, FederationSpec, LocalRootSettings, RootBackend, RootType};
use federator_api::{names, plumbing};
use federator_core::ca::{IssuingCa, RootOptions};
use federator_core::identity::TrustDomain;
use federator_core::key::KeyAlgorithm;
use kube::Client;
use kube::api::{Api, PostParams};
use time::OffsetDateTime;

use super::kube::{ensure_namespace, find_federation, install_crds};
use super::trust::roots;
use super::trust::store::RootStore;
use super::trust::vault;
use super::trust::vault_config::{VaultConfig, vault_backend_spec, vault_material};
use crate::{Error, Result};

/// The root to start the federation with.
pub enum RootChoice {
    /// Generate a root for `trust_domain` (more are generated as trust domains join).
    Local {
        /// The first trust domain.
        trust_domain: TrustDomain,
        /// Root options.
        options: RootOptions,
    },
    /// Vault / OpenBao signs; the root key stays there.
    Vault {
        /// Where and how.
        config: VaultConfig,
        /// Enable the PKI mount and generate a root first (for trying it out).
        bootstrap: bool,
    },
    /// Use an existing CA (PEM: the CA, then its chain up to the root) and its key.
    Import {
        /// CA certificate (and chain), PEM.
        cert_pem: Vec<u8>,
        /// CA key, PEM.
        key_pem: Vec<u8>,
    },
}

/// Federation settings.
pub struct InitOptions {
    /// The root.
    pub root: RootChoice,
    /// Cluster CA lifetime.
    pub cluster_ca_ttl: Duration,
    /// Renewal point, percent of lifetime.
    pub renew_at_percent: u8,
    /// Key algorithm of cluster CA keys.
    pub key_algorithm: KeyAlgorithm,
    /// Put the trust-domain URI name constraint on every cluster CA.
    pub constrain_to_trust_domain: bool,
}

/// What `init` did.
#[derive(Debug)]
pub struct InitReport {
    /// Whether anything was created (false on a re-run).
    pub created: bool,
    /// The roots: (trust domain or `*` for all, SHA-256).
    pub root_fingerprints: Vec<(String, String)>,
    /// What the Vault bootstrap did.
    pub bootstrap: Vec<String>,
}

/// Why the trust-domain name constraint and the `vault` backend do not go together.
pub const VAULT_CONSTRAINT: &str = "--constrain-to-trust-domain cannot be used with --root vault: Vault signs the cluster CAs and its PKI cannot add a URI name constraint; use --root local or --root import, or leave the constraint off";

/// Initialises the hub. Idempotent; refuses to change an existing federation's root.
pub async fn init(hub: &Client, opts: InitOptions) -> Result<InitReport> {
    if !(1..=99).contains(&opts.renew_at_percent) {
        return Err(Error::Usage(
            "--renew-at-percent must be between 1 and 99".into(),
        ));
    }
    if opts.constrain_to_trust_domain && matches!(opts.root, RootChoice::Vault { .. }) {
        return Err(Error::Usage(VAULT_CONSTRAINT.into()));
    }
    // Validate and build the root material before touching the cluster.
    let mut bootstrap_report = Vec::new();
    let mut vault_spec = None;
    let (backend, material) = match &opts.root {
        RootChoice::Vault { config, bootstrap } => {
            if *bootstrap {
                bootstrap_report = vault::bootstrap(config).await?;
            }
            // Proves the credential works and the issuer exists before anything is written.
            vault::VaultSigner::connect(config.clone()).await?;
            vault_spec = Some(vault_backend_spec(config));
            (RootType::Vault, vault_material(&config.auth))
        }
        RootChoice::Local {
            trust_domain,
            options,
        } => {
            let root = IssuingCa::create_root(
                &RootOptions {
                    common_name: format!("federator root CA for {trust_domain}"),
                    ..options.clone()
                },
                OffsetDateTime::now_utc(),
            )?;
            (RootType::Local, roots::local_material(trust_domain, &root))
        }
        RootChoice::Import { cert_pem, key_pem } => {
            IssuingCa::import(cert_pem, key_pem, OffsetDateTime::now_utc())?;
            (RootType::Import, roots::import_material(cert_pem, key_pem))
        }
    };
    let spec = FederationSpec {
        root: RootBackend {
            type_: backend,
            vault: vault_spec,
        },
        cluster_ca_ttl: opts.cluster_ca_ttl.into(),
        renew_at_percent: opts.renew_at_percent,
        key_algorithm: opts.key_algorithm,
        constrain_to_trust_domain: opts.constrain_to_trust_domain,
        local_roots: match &opts.root {
            RootChoice::Local { options, .. } => LocalRootSettings {
                key_algorithm: Some(options.key_algorithm),
                ttl: Some(options.ttl.into()),
                organization: options.organization.clone(),
            },
            _ => LocalRootSettings::default(),
        },
    };

    let feds: Api<Federation> = Api::namespaced(hub.clone(), names::NAMESPACE);
    // An existing federation with other settings is refused before anything is written. (On a
    // hub that has no CRDs yet, the read fails with 404: nothing exists.)
    let existing = find_federation(hub).await?;
    if let Some(existing) = &existing
        && existing.spec != spec
    {
        return Err(Error::Refused(
            if existing.spec.root.type_ != spec.root.type_ {
                format!(
                    "this hub already runs a federation with the {} root backend; refusing to change it to {}",
                    existing.spec.root.type_, spec.root.type_
                )
            } else {
                format!(
                    "the federation already exists with other settings (cluster CA TTL {}, renew at {}%, key {}, trust-domain name constraint {}); edit them with `kubectl edit federation {} -n {}`",
                    existing.spec.cluster_ca_ttl,
                    existing.spec.renew_at_percent,
                    existing.spec.key_algorithm,
                    if existing.spec.constrain_to_trust_domain {
                        "on"
                    } else {
                        "off"
                    },
                    names::FEDERATION,
                    names::NAMESPACE
                )
            },
        ));
    }

    ensure_namespace(hub, names::NAMESPACE).await?;
    install_crds(hub, federator_api::crds()).await?;
    let store = RootStore::new(hub.clone());
    let created_roots = store.initialise(backend, material).await?;
    let current_spec = find_federation(hub)
        .await?
        .map_or_else(|| spec.clone(), |f| f.spec);
    let root_fingerprints = store.load(&current_spec).await?.root_fingerprints();

    let created_fed = if existing.is_some() {
        false
    } else {
        let fed = Federation {
            metadata: plumbing::metadata(names::FEDERATION, names::NAMESPACE),
            spec,
            status: None,
        };
        plumbing::create_or_accept(&feds, &PostParams::default(), &fed)
            .await
            .map_err(|e| Error::kube("create federation", e))?
    };
    Ok(InitReport {
        created: created_roots || created_fed,
        root_fingerprints,
        bootstrap: bootstrap_report,
    })
}
