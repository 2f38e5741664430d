//! The root material of the federation: the hub Secret `federator-system/federator-roots`.
//!
//! | backend | keys |
//! |---|---|
//! | `local` | `<td>.crt`, `<td>.key`: one self-signed root per trust domain, created on first use; during a rotation also `<td>.previous` (the old root, still trusted) and `<td>.rotation` (its state, JSON) |
//! | `import` | `ca.crt` (the CA, then its chain up to the root), `ca.key` |
//! | `vault` | only the hub's Vault credential ([`super::vault_config`]) |
//!
//! The annotation `federator.io/root-backend` records which. Private keys never leave this
//! module except into that Secret. Everything here is a pure function of the Secret's data
//! ([`signer_from_material`], [`add_missing_roots`], [`begin_rotation`], [`apply_record`]);
//! [`super::store::RootStore`] reads and writes the Secret with optimistic concurrency.

use std::collections::BTreeMap;
use std::time::Duration;

use federator_api::hub::{FederationSpec, RootType};
use federator_api::names;
use federator_core::ca::{IssuingCa, RootOptions};
use federator_core::cert::fingerprint;
use federator_core::identity::TrustDomain;
use k8s_openapi::api::core::v1::Secret;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::signer::{LocalRoots, Signer};
use crate::hub::plan::rotation::{Record, RotationState};
use crate::{Error, Result};

/// Annotation naming the backend of the roots Secret.
pub const BACKEND_ANNOTATION: &str = "federator.io/root-backend";
/// Key of the imported CA (and its chain).
pub const IMPORT_CERT: &str = "ca.crt";
const IMPORT_KEY: &str = "ca.key";

/// A root rotation in progress, as stored (JSON) in the roots Secret under `<td>.rotation`.
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

impl Rotation {
    fn decode(td: &TrustDomain, bytes: &[u8]) -> Result<Rotation> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Refused(format!("malformed rotation state for {td}: {e}")))
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(Error::encode("the rotation state"))
    }
}

/// The options for roots the local backend makes, from the Federation's settings.
pub fn local_root_options(spec: &FederationSpec) -> RootOptions {
    let s = &spec.local_roots;
    let mut o = RootOptions::default();
    if let Some(alg) = s.key_algorithm {
        o.key_algorithm = alg;
    }
    if let Some(ttl) = s.ttl {
        o.ttl = ttl.get();
    }
    if !s.organization.is_empty() {
        o.organization.clone_from(&s.organization);
    }
    o
}

/// A new local root for a trust domain.
pub fn new_root(td: &TrustDomain, opts: &RootOptions, now: OffsetDateTime) -> Result<IssuingCa> {
    Ok(IssuingCa::create_root(
        &RootOptions {
            common_name: format!("federator root CA for {td}"),
            ..opts.clone()
        },
        now,
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

/// The backend a roots Secret was made for.
pub fn backend_of(secret: &Secret) -> Result<RootType> {
    let value = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BACKEND_ANNOTATION))
        .map(String::as_str);
    value.and_then(RootType::parse).ok_or_else(|| {
        Error::Refused(format!(
            "the roots Secret {}/{} has an unknown backend {value:?}",
            names::NAMESPACE,
            names::ROOTS_SECRET
        ))
    })
}

/// The signer of the `local` or `import` backend, from the Secret's data.
pub fn signer_from_material(
    backend: RootType,
    data: &BTreeMap<String, Vec<u8>>,
    now: OffsetDateTime,
) -> Result<Signer> {
    match backend {
        RootType::Vault => Err(Error::Refused(
            "the Vault signer is loaded with RootStore::load".into(),
        )),
        RootType::Import => {
            let cert = data
                .get(IMPORT_CERT)
                .ok_or_else(|| Error::Refused("roots Secret lacks ca.crt".into()))?;
            let key = data
                .get(IMPORT_KEY)
                .ok_or_else(|| Error::Refused("roots Secret lacks ca.key".into()))?;
            Ok(Signer::Import(Box::new(IssuingCa::import(cert, key, now)?)))
        }
        RootType::Local => {
            let mut roots = LocalRoots::default();
            for (k, cert) in data {
                let Some(td) = k.strip_suffix(".crt") else {
                    continue;
                };
                let td = TrustDomain::new(td)?;
                let key = data.get(&key_key(&td)).ok_or_else(|| {
                    Error::Refused(format!("roots Secret lacks the key for trust domain {td}"))
                })?;
                let active = IssuingCa::import(cert, key, now)?;
                if let (Some(prev), Some(state)) =
                    (data.get(&previous_key(&td)), data.get(&rotation_key(&td)))
                {
                    let der = federator_core::cert::parse_pem_certificates(prev, "previous root")?
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::Refused(format!("empty previous root for {td}")))?;
                    let stored = Rotation::decode(&td, state)?;
                    let state = RotationState {
                        new_root_sha256: fingerprint(active.root_der()),
                        previous_root_sha256: fingerprint(&der),
                        drain: Duration::from_secs(stored.drain_seconds),
                        resigned_at: stored
                            .resigned_at
                            .as_deref()
                            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
                    };
                    roots.rotating.insert(td.clone(), (der, state));
                }
                roots.active.insert(td, active);
            }
            Ok(Signer::Local(roots))
        }
    }
}

/// Creates local roots for the trust domains that have none; returns those created.
pub fn add_missing_roots(
    data: &mut BTreeMap<String, Vec<u8>>,
    tds: &[TrustDomain],
    opts: &RootOptions,
    now: OffsetDateTime,
) -> Result<Vec<TrustDomain>> {
    let mut created = Vec::new();
    for td in tds {
        if !data.contains_key(&cert_key(td)) {
            data.extend(local_material(td, &new_root(td, opts, now)?));
            created.push(td.clone());
        }
    }
    Ok(created)
}

/// Starts rotating a trust domain's root (local backend): a new root signs from now on, the
/// current one is kept as the previous root. Returns the new root's fingerprint.
pub fn begin_rotation(
    data: &mut BTreeMap<String, Vec<u8>>,
    backend: RootType,
    td: &TrustDomain,
    opts: &RootOptions,
    drain: Duration,
    now: OffsetDateTime,
) -> Result<String> {
    if backend != RootType::Local {
        return Err(Error::Refused(format!(
            "root rotation is managed by federator for the local backend only; with {backend} rotate the root in your PKI"
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
    let root = new_root(td, opts, now)?;
    let rotation = Rotation {
        started_at: federator_core::cert::rfc3339(now),
        drain_seconds: drain.as_secs(),
        resigned_at: None,
    };
    data.insert(previous_key(td), current);
    data.extend(local_material(td, &root));
    data.insert(rotation_key(td), rotation.encode()?);
    Ok(fingerprint(root.root_der()))
}

/// Records a step of a trust domain's rotation; returns whether the data changed.
pub fn apply_record(
    data: &mut BTreeMap<String, Vec<u8>>,
    td: &TrustDomain,
    record: Record,
) -> Result<bool> {
    match record {
        Record::Resigned { at } => {
            let Some(state) = data.get(&rotation_key(td)) else {
                return Ok(false);
            };
            let mut rotation = Rotation::decode(td, state)?;
            if rotation.resigned_at.is_some() {
                return Ok(false);
            }
            rotation.resigned_at = Some(federator_core::cert::rfc3339(at));
            data.insert(rotation_key(td), rotation.encode()?);
            Ok(true)
        }
        Record::Finished => {
            let had = data.remove(&previous_key(td)).is_some();
            let had_state = data.remove(&rotation_key(td)).is_some();
            Ok(had || had_state)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_testkit::pki;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn local_roots_are_made_once_per_trust_domain() {
        let mut data = BTreeMap::new();
        let (a, b) = (pki::td("a.local"), pki::td("b.local"));
        let opts = RootOptions::default();
        let created = add_missing_roots(&mut data, &[a.clone(), b.clone()], &opts, now()).unwrap();
        assert_eq!(created, vec![a.clone(), b.clone()]);
        let before = data.clone();
        assert!(
            add_missing_roots(&mut data, std::slice::from_ref(&a), &opts, now())
                .unwrap()
                .is_empty()
        );
        assert_eq!(data, before, "an existing root is never replaced");
        let Signer::Local(roots) = signer_from_material(RootType::Local, &data, now()).unwrap()
        else {
            panic!("not local")
        };
        assert_eq!(roots.active.len(), 2);
        assert!(roots.rotating.is_empty());
        let cn = federator_core::cert::CertInfo::from_der(roots.active[&a].root_der())
            .unwrap()
            .subject;
        assert!(cn.contains("federator root CA for a.local"), "{cn}");
    }

    #[test]
    fn a_rotation_keeps_the_old_root_until_it_is_finished() {
        let a = pki::td("a.local");
        let opts = RootOptions::default();
        let mut data = BTreeMap::new();
        add_missing_roots(&mut data, std::slice::from_ref(&a), &opts, now()).unwrap();
        let old_cert = data[&cert_key(&a)].clone();
        let fp = begin_rotation(
            &mut data,
            RootType::Local,
            &a,
            &opts,
            Duration::from_secs(90),
            now(),
        )
        .unwrap();
        assert_eq!(data[&previous_key(&a)], old_cert);
        let err = begin_rotation(&mut data, RootType::Local, &a, &opts, Duration::ZERO, now())
            .unwrap_err();
        assert!(err.to_string().contains("already rotating"), "{err}");
        let Signer::Local(roots) = signer_from_material(RootType::Local, &data, now()).unwrap()
        else {
            panic!("not local")
        };
        let (previous, state) = &roots.rotating[&a];
        assert_eq!(state.new_root_sha256, fp);
        assert_eq!(state.previous_root_sha256, fingerprint(previous));
        assert_eq!(state.drain, Duration::from_secs(90));
        assert_eq!(state.resigned_at, None);

        let at = now();
        assert!(apply_record(&mut data, &a, Record::Resigned { at }).unwrap());
        assert!(
            !apply_record(&mut data, &a, Record::Resigned { at: now() }).unwrap(),
            "the first move counts"
        );
        let Signer::Local(roots) = signer_from_material(RootType::Local, &data, now()).unwrap()
        else {
            panic!("not local")
        };
        assert_eq!(
            roots.rotating[&a].1.resigned_at.map(|t| t.unix_timestamp()),
            Some(at.unix_timestamp())
        );
        assert!(apply_record(&mut data, &a, Record::Finished).unwrap());
        assert!(!apply_record(&mut data, &a, Record::Finished).unwrap());
        assert!(!data.contains_key(&previous_key(&a)));
        assert!(data.contains_key(&cert_key(&a)));
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let a = pki::td("a.local");
        let opts = RootOptions::default();
        let rotate_nothing = |backend| {
            begin_rotation(
                &mut BTreeMap::new(),
                backend,
                &a,
                &opts,
                Duration::ZERO,
                now(),
            )
            .unwrap_err()
        };
        let err = rotate_nothing(RootType::Vault);
        assert!(err.to_string().contains("local backend only"), "{err}");
        let err = rotate_nothing(RootType::Local);
        assert!(err.to_string().contains("has no root"), "{err}");
        assert_eq!(err.exit_code(), 2);
        // A root without its key, and a rotation whose state is not JSON.
        let mut data = BTreeMap::new();
        add_missing_roots(&mut data, std::slice::from_ref(&a), &opts, now()).unwrap();
        let mut keyless = data.clone();
        keyless.remove(&key_key(&a));
        let err = signer_from_material(RootType::Local, &keyless, now()).unwrap_err();
        assert!(err.to_string().contains("lacks the key"), "{err}");
        data.insert(previous_key(&a), data[&cert_key(&a)].clone());
        data.insert(rotation_key(&a), b"{".to_vec());
        let err = signer_from_material(RootType::Local, &data, now()).unwrap_err();
        assert!(
            err.to_string().contains("malformed rotation state"),
            "{err}"
        );
        let err = signer_from_material(RootType::Import, &BTreeMap::new(), now()).unwrap_err();
        assert!(err.to_string().contains("lacks ca.crt"), "{err}");
    }

    #[test]
    fn an_imported_ca_signs_for_every_trust_domain() {
        let ca = pki::root("imported");
        let data = import_material(ca.cert_pem().as_bytes(), ca.key().to_pkcs8_pem().as_bytes());
        let signer = signer_from_material(RootType::Import, &data, now()).unwrap();
        assert_eq!(
            signer.root_der_for(&pki::td("x.local")).unwrap(),
            ca.root_der()
        );
    }

    #[test]
    fn the_backend_annotation_is_checked() {
        let mut s = Secret::default();
        assert!(backend_of(&s).is_err());
        s.metadata.annotations = Some([(BACKEND_ANNOTATION.into(), "vault".into())].into());
        assert_eq!(backend_of(&s).unwrap(), RootType::Vault);
        s.metadata.annotations = Some([(BACKEND_ANNOTATION.into(), "hsm".into())].into());
        assert!(backend_of(&s).unwrap_err().to_string().contains("\"hsm\""));
    }

    #[test]
    fn local_root_options_follow_the_federation() {
        let mut spec = FederationSpec::default();
        assert_eq!(local_root_options(&spec).ttl, RootOptions::default().ttl);
        spec.local_roots.ttl = Some(Duration::from_secs(3600).into());
        spec.local_roots.organization = "Example".into();
        spec.local_roots.key_algorithm = Some(federator_core::key::KeyAlgorithm::EcdsaP384);
        let o = local_root_options(&spec);
        assert_eq!(o.ttl, Duration::from_secs(3600));
        assert_eq!(o.organization, "Example");
        assert_eq!(
            o.key_algorithm,
            federator_core::key::KeyAlgorithm::EcdsaP384
        );
    }
}
