//! The root material of the federation: the hub Secret `federator-system/federator-roots`.
//!
//! | backend | keys |
//! |---|---|
//! | `local` | `<td>.crt`, `<td>.key`: one self-signed root per trust domain, created on first use; during a rotation also `<td>.previous` and `<td>.previous-key` (the old root, still trusted, and its key, for an abort) and `<td>.rotation` (its state, JSON) |
//! | `import` | `ca.crt` (the CA, then its chain up to the root), `ca.key`; during a rotation also `ca.previous.crt`, `ca.previous.key` (the previous CA) and `ca.rotation` |
//! | `vault` | the hub's Vault credential ([`super::vault_config`]); during a rotation also `vault.rotation`: its state with the issuer it moves to and the one it leaves ([`VaultRotation`]) |
//!
//! An abort swaps what signs and what is still trusted ([`abort_rotation`]), so that the
//! same rotation runs back (see [`crate::hub::plan::rotation`]).
//!
//! The annotation `federator.io/root-backend` records which. Private keys never leave this
//! module except into that Secret. Everything here is a pure function of the Secret's data
//! ([`signer_from_material`], [`add_missing_roots`], [`begin_rotation`],
//! [`begin_import_rotation`], [`begin_vault_rotation`], [`abort_rotation`], [`apply_record`]);
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

use super::signer::{IssuerRotation, LocalRoots, Signer};
use crate::hub::plan::rotation::{self, Record, RotationState, Scope, TargetRules};
use crate::{Error, Result};

/// Annotation naming the backend of the roots Secret.
pub const BACKEND_ANNOTATION: &str = "federator.io/root-backend";
/// Key of the imported CA (and its chain).
pub const IMPORT_CERT: &str = "ca.crt";
const IMPORT_KEY: &str = "ca.key";
const IMPORT_PREVIOUS_CERT: &str = "ca.previous.crt";
const IMPORT_PREVIOUS_KEY: &str = "ca.previous.key";
const IMPORT_ROTATION: &str = "ca.rotation";
/// Key of the Vault backend's rotation state.
pub const VAULT_ROTATION: &str = "vault.rotation";

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
    /// Whether it was aborted: it runs back to the original root.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aborted: bool,
}

impl Rotation {
    /// A rotation starting `now`.
    pub fn new(drain: Duration, now: OffsetDateTime) -> Self {
        Rotation {
            started_at: federator_core::cert::rfc3339(now),
            drain_seconds: drain.as_secs(),
            resigned_at: None,
            aborted: false,
        }
    }

    fn decode(scope: &impl std::fmt::Display, bytes: &[u8]) -> Result<Rotation> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Refused(format!("malformed rotation state for {scope}: {e}")))
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(Error::encode("the rotation state"))
    }

    /// The state machine's view, between two roots.
    fn state(&self, new_root: &[u8], previous_root: &[u8]) -> RotationState {
        RotationState {
            new_root_sha256: fingerprint(new_root),
            previous_root_sha256: fingerprint(previous_root),
            drain: Duration::from_secs(self.drain_seconds),
            resigned_at: self
                .resigned_at
                .as_deref()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
            aborted: self.aborted,
        }
    }

    /// Turns it back (see [`abort_rotation`]): refused when it already runs back.
    fn abort(&mut self, scope: &str) -> Result<()> {
        if self.aborted {
            return Err(Error::Refused(format!(
                "the rotation of {scope} is already being aborted; see `federator status`"
            )));
        }
        self.aborted = true;
        self.resigned_at = None;
        Ok(())
    }
}

/// A rotation of the Vault backend's issuer, as stored (JSON) under `vault.rotation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultRotation {
    /// The common state.
    #[serde(flatten)]
    pub rotation: Rotation,
    /// The issuer that signs from now on (a name or ID; empty: the mount's default).
    pub issuer: String,
    /// The issuer it replaces (still trusted until the end).
    pub previous_issuer: String,
    /// The root above `issuer` (PEM).
    pub root_pem: String,
    /// The root above `previous_issuer` (PEM).
    pub previous_root_pem: String,
}

impl VaultRotation {
    /// The stored rotation, if any.
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Option<VaultRotation>> {
        data.get(VAULT_ROTATION)
            .map(|b| {
                serde_json::from_slice(b)
                    .map_err(|e| Error::Refused(format!("malformed Vault rotation state: {e}")))
            })
            .transpose()
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(Error::encode("the Vault rotation state"))
    }

    /// The signer's view of it, given the root Vault reports for `issuer` (DER).
    pub fn issuer_rotation(&self, signing_root: &[u8]) -> Result<IssuerRotation> {
        let previous_root =
            first_cert(self.previous_root_pem.as_bytes(), "the previous Vault root")?;
        Ok(IssuerRotation {
            state: self.rotation.state(signing_root, &previous_root),
            previous_root,
        })
    }
}

fn first_cert(pem: &[u8], what: &str) -> Result<Vec<u8>> {
    federator_core::cert::parse_pem_certificates(pem, what)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Refused(format!("{what} is empty")))
}

fn last_cert(pem: &[u8], what: &str) -> Result<Vec<u8>> {
    federator_core::cert::parse_pem_certificates(pem, what)?
        .pop()
        .ok_or_else(|| Error::Refused(format!("{what} is empty")))
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

fn previous_key_key(td: &TrustDomain) -> String {
    format!("{td}.previous-key")
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
            let ca = IssuingCa::import(cert, key, now)?;
            let (rotation, previous) =
                match (data.get(IMPORT_PREVIOUS_CERT), data.get(IMPORT_ROTATION)) {
                    (Some(prev), Some(state)) => {
                        let previous_root = last_cert(prev, "the previous imported CA")?;
                        let stored = Rotation::decode(&Scope::Issuer, state)?;
                        let previous = data
                            .get(IMPORT_PREVIOUS_KEY)
                            .map(|key| IssuingCa::import(prev, key, now))
                            .transpose()?
                            .map(Box::new);
                        let rotation = IssuerRotation {
                            state: stored.state(ca.root_der(), &previous_root),
                            previous_root,
                        };
                        (Some(rotation), previous)
                    }
                    _ => (None, None),
                };
            Ok(Signer::Import(Box::new(ca), rotation, previous))
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
                    let der = first_cert(prev, &format!("the previous root of {td}"))?;
                    let state = Rotation::decode(&td, state)?.state(active.root_der(), &der);
                    roots.rotating.insert(td.clone(), (der, state));
                    if let Some(key) = data.get(&previous_key_key(&td)) {
                        let previous = IssuingCa::import(prev, key, now)?;
                        roots.previous.insert(td.clone(), previous);
                    }
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
        return Err(Error::Usage(format!(
            "the {backend} backend has one issuer for every trust domain: rotate it with `federator rotate-root` and {} (no --trust-domain)",
            match backend {
                RootType::Vault => "--vault-issuer NEW or --vault-bootstrap",
                _ => "--cert NEW.pem --key NEW.key",
            }
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
    let current_key = data.get(&key_key(td)).cloned().unwrap_or_default();
    let root = new_root(td, opts, now)?;
    data.insert(previous_key(td), current);
    data.insert(previous_key_key(td), current_key);
    data.extend(local_material(td, &root));
    data.insert(rotation_key(td), Rotation::new(drain, now).encode()?);
    Ok(fingerprint(root.root_der()))
}

fn refuse_second_rotation(data: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    if data.contains_key(IMPORT_ROTATION) || data.contains_key(VAULT_ROTATION) {
        return Err(Error::Refused(
            "the issuer is already rotating; see `federator status` (or `federator rotate-root --abort`)".into(),
        ));
    }
    Ok(())
}

/// Starts rotating the imported CA to `cert_pem`/`key_pem` (the new CA, then its chain up to
/// its root; e.g. an intermediate under another offline root): checked as `init` checks an
/// import and by [`rotation::check_target`] (`must_outlive`: see [`TargetRules`]); the
/// current CA is kept, still trusted, until the rotation ends. Returns the new root's
/// fingerprint.
pub fn begin_import_rotation(
    data: &mut BTreeMap<String, Vec<u8>>,
    backend: RootType,
    cert_pem: &[u8],
    key_pem: &[u8],
    drain: Duration,
    must_outlive: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<String> {
    if backend != RootType::Import {
        return Err(Error::Usage(format!(
            "--cert and --key rotate an imported CA, but this hub's root backend is {backend}"
        )));
    }
    refuse_second_rotation(data)?;
    let current = data
        .get(IMPORT_CERT)
        .ok_or_else(|| Error::Refused("roots Secret lacks ca.crt".into()))?;
    let current_root = last_cert(current, "the imported CA")?;
    let new = IssuingCa::import(cert_pem, key_pem, now).map_err(|e| {
        Error::Usage(format!(
            "refusing to rotate: the new CA cannot sign cluster CAs: {e}"
        ))
    })?;
    let chain: Vec<Vec<u8>> = std::iter::once(new.cert_der().to_vec())
        .chain(new.chain_above().iter().cloned())
        .collect();
    let fp = rotation::check_target(
        &chain,
        &TargetRules {
            current_root: &current_root,
            must_outlive,
            now,
        },
    )?;
    let moved = [
        (IMPORT_CERT, IMPORT_PREVIOUS_CERT),
        (IMPORT_KEY, IMPORT_PREVIOUS_KEY),
    ];
    for (from, to) in moved {
        if let Some(v) = data.get(from).cloned() {
            data.insert(to.to_owned(), v);
        }
    }
    data.extend(import_material(cert_pem, key_pem));
    data.insert(
        IMPORT_ROTATION.to_owned(),
        Rotation::new(drain, now).encode()?,
    );
    Ok(fp)
}

/// Starts rotating the Vault backend's issuer: `to` names the issuer that signs from now on
/// and the one it replaces, with both roots; the caller checked the new issuer against Vault
/// ([`rotation::check_target`]).
pub fn begin_vault_rotation(
    data: &mut BTreeMap<String, Vec<u8>>,
    backend: RootType,
    to: VaultRotation,
) -> Result<()> {
    if backend != RootType::Vault {
        return Err(Error::Usage(format!(
            "--vault-issuer and --vault-bootstrap rotate a Vault issuer, but this hub's root backend is {backend}"
        )));
    }
    refuse_second_rotation(data)?;
    data.insert(VAULT_ROTATION.to_owned(), to.encode()?);
    Ok(())
}

/// Aborts a rotation before its old root was dropped: what signed before signs again and the
/// root the rotation moved to stays trusted, so `serve` moves every member back with both
/// roots in every bundle, drains, and then drops the abandoned root. `td` names the trust
/// domain with the local backend (and must be `None` for the others). Returns the root
/// returned to (SHA-256).
pub fn abort_rotation(
    data: &mut BTreeMap<String, Vec<u8>>,
    backend: RootType,
    td: Option<&TrustDomain>,
) -> Result<String> {
    let not_rotating = |what: &str| {
        Error::Usage(format!(
            "{what} is not rotating (or its old root was already dropped, which cannot be undone: rotate again instead)"
        ))
    };
    let swap = |data: &mut BTreeMap<String, Vec<u8>>, a: &str, b: &str| {
        let (x, y) = (data.remove(a), data.remove(b));
        if let Some(y) = y {
            data.insert(a.to_owned(), y);
        }
        if let Some(x) = x {
            data.insert(b.to_owned(), x);
        }
    };
    match (backend, td) {
        (RootType::Local, Some(td)) => {
            let state = data
                .get(&rotation_key(td))
                .ok_or_else(|| not_rotating(&format!("trust domain {td}")))?;
            let mut rotation = Rotation::decode(td, state)?;
            if !data.contains_key(&previous_key_key(td)) {
                return Err(Error::Refused(format!(
                    "the rotation of {td} was started by an earlier federator that did not keep the previous root's key, so it cannot be aborted; let it finish"
                )));
            }
            rotation.abort(td.as_str())?;
            data.insert(rotation_key(td), rotation.encode()?);
            swap(data, &cert_key(td), &previous_key(td));
            swap(data, &key_key(td), &previous_key_key(td));
            let root = data
                .get(&cert_key(td))
                .map(Vec::as_slice)
                .unwrap_or_default();
            Ok(fingerprint(&first_cert(root, "the original root")?))
        }
        (RootType::Local, None) => Err(Error::Usage(
            "the local backend has a root per trust domain: name it with --trust-domain".into(),
        )),
        (_, Some(td)) => Err(Error::Usage(format!(
            "the {backend} backend has one issuer for every trust domain: abort without --trust-domain (not {td})"
        ))),
        (RootType::Import, None) => {
            let state = data
                .get(IMPORT_ROTATION)
                .ok_or_else(|| not_rotating("the imported CA"))?;
            let mut rotation = Rotation::decode(&Scope::Issuer, state)?;
            rotation.abort("the imported CA")?;
            data.insert(IMPORT_ROTATION.to_owned(), rotation.encode()?);
            swap(data, IMPORT_CERT, IMPORT_PREVIOUS_CERT);
            swap(data, IMPORT_KEY, IMPORT_PREVIOUS_KEY);
            let chain = data.get(IMPORT_CERT).map(Vec::as_slice).unwrap_or_default();
            Ok(fingerprint(&last_cert(chain, "the original CA")?))
        }
        (RootType::Vault, None) => {
            let mut r =
                VaultRotation::from_data(data)?.ok_or_else(|| not_rotating("the Vault issuer"))?;
            r.rotation.abort("the Vault issuer")?;
            std::mem::swap(&mut r.issuer, &mut r.previous_issuer);
            std::mem::swap(&mut r.root_pem, &mut r.previous_root_pem);
            data.insert(VAULT_ROTATION.to_owned(), r.encode()?);
            Ok(fingerprint(&first_cert(
                r.root_pem.as_bytes(),
                "the original Vault root",
            )?))
        }
    }
}

/// Records a step of a rotation; returns whether the data changed.
pub fn apply_record(
    data: &mut BTreeMap<String, Vec<u8>>,
    backend: RootType,
    scope: &Scope,
    record: Record,
) -> Result<bool> {
    // Where the rotation's state is, and what else leaves at the end.
    let (state_key, leaving): (String, Vec<String>) = match (scope, backend) {
        (Scope::TrustDomain(td), _) => (
            rotation_key(td),
            vec![previous_key(td), previous_key_key(td)],
        ),
        (Scope::Issuer, RootType::Vault) => (VAULT_ROTATION.to_owned(), Vec::new()),
        (Scope::Issuer, _) => (
            IMPORT_ROTATION.to_owned(),
            vec![
                IMPORT_PREVIOUS_CERT.to_owned(),
                IMPORT_PREVIOUS_KEY.to_owned(),
            ],
        ),
    };
    match record {
        Record::Resigned { at } => {
            let Some(state) = data.get(&state_key) else {
                return Ok(false);
            };
            // The common part; the Vault state has more fields around it.
            let mut value: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(state).map_err(|e| {
                    Error::Refused(format!("malformed rotation state for {scope}: {e}"))
                })?;
            if value.get("resignedAt").is_some_and(|v| !v.is_null()) {
                return Ok(false);
            }
            value.insert(
                "resignedAt".to_owned(),
                serde_json::Value::String(federator_core::cert::rfc3339(at)),
            );
            data.insert(
                state_key,
                serde_json::to_vec(&value).map_err(Error::encode("the rotation state"))?,
            );
            Ok(true)
        }
        Record::Finished => {
            let mut changed = data.remove(&state_key).is_some();
            for k in leaving {
                changed |= data.remove(&k).is_some();
            }
            Ok(changed)
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
        assert_eq!(
            fingerprint(roots.previous[&a].root_der()),
            state.previous_root_sha256,
            "the previous root with its key, to sign until every member trusts the new one"
        );

        let at = now();
        let scope = Scope::TrustDomain(a.clone());
        let record = |data: &mut BTreeMap<String, Vec<u8>>, r| {
            apply_record(data, RootType::Local, &scope, r).unwrap()
        };
        assert!(record(&mut data, Record::Resigned { at }));
        assert!(
            !record(&mut data, Record::Resigned { at: now() }),
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
        assert!(record(&mut data, Record::Finished));
        assert!(!record(&mut data, Record::Finished));
        assert!(!data.contains_key(&previous_key(&a)));
        assert!(!data.contains_key(&previous_key_key(&a)));
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
        assert!(err.to_string().contains("--vault-issuer"), "{err}");
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

    /// An imported CA: `name`'s intermediate under a new offline root, as an enterprise PKI
    /// would hand it over (the CA, then its chain; its key).
    fn enterprise_ca(name: &str, ttl: Duration) -> (String, String) {
        let offline = pki::root_with(&RootOptions {
            common_name: format!("{name} offline root"),
            path_len: 2,
            ..RootOptions::default()
        });
        let ca = offline
            .create_intermediate(
                &RootOptions {
                    common_name: format!("{name} federation CA"),
                    ttl,
                    ..RootOptions::default()
                },
                now(),
            )
            .unwrap();
        (ca.chain_pem(), ca.key().to_pkcs8_pem())
    }

    fn imported(name: &str) -> BTreeMap<String, Vec<u8>> {
        let (cert, key) = enterprise_ca(name, Duration::from_secs(365 * 86400));
        import_material(cert.as_bytes(), key.as_bytes())
    }

    fn rotate_import(
        data: &mut BTreeMap<String, Vec<u8>>,
        cert: &str,
        key: &str,
        must_outlive: OffsetDateTime,
    ) -> Result<String> {
        begin_import_rotation(
            data,
            RootType::Import,
            cert.as_bytes(),
            key.as_bytes(),
            Duration::from_secs(60),
            must_outlive,
            now(),
        )
    }

    #[test]
    fn an_imported_ca_rotates_to_an_intermediate_under_another_root_and_back() {
        let mut data = imported("old");
        let original = data.clone();
        let Signer::Import(old, None, None) =
            signer_from_material(RootType::Import, &data, now()).unwrap()
        else {
            panic!("not an idle import")
        };
        let (cert, key) = enterprise_ca("new", Duration::from_secs(365 * 86400));
        let fp = rotate_import(&mut data, &cert, &key, now() + Duration::from_secs(3600)).unwrap();
        let signer = signer_from_material(RootType::Import, &data, now()).unwrap();
        let Signer::Import(new, Some(r), Some(previous)) = &signer else {
            panic!("not rotating with the previous CA")
        };
        assert_eq!(fingerprint(new.root_der()), fp);
        assert_eq!(
            previous.cert_der(),
            old.cert_der(),
            "the old CA, with its key, to sign until every member trusts the new root"
        );
        assert_eq!(
            r.previous_root,
            old.root_der(),
            "the old offline root stays trusted"
        );
        assert_eq!(r.state.previous_root_sha256, fingerprint(old.root_der()));
        let err = rotate_import(&mut data, &cert, &key, now()).unwrap_err();
        assert!(err.to_string().contains("already rotating"), "{err}");

        // Aborted: the old CA signs again, the new root is the one still trusted.
        let back = abort_rotation(&mut data, RootType::Import, None).unwrap();
        assert_eq!(back, fingerprint(old.root_der()));
        let Signer::Import(now_signing, Some(r), _) =
            signer_from_material(RootType::Import, &data, now()).unwrap()
        else {
            panic!("not rotating back")
        };
        assert_eq!(now_signing.cert_der(), old.cert_der());
        assert_eq!(fingerprint(&r.previous_root), fp);
        assert!(r.state.aborted && r.state.resigned_at.is_none());
        let err = abort_rotation(&mut data, RootType::Import, None).unwrap_err();
        assert!(err.to_string().contains("already being aborted"), "{err}");
        // It finishes like any rotation: the abandoned CA is gone, the original one is back.
        apply_record(
            &mut data,
            RootType::Import,
            &Scope::Issuer,
            Record::Resigned { at: now() },
        )
        .unwrap();
        assert!(
            apply_record(
                &mut data,
                RootType::Import,
                &Scope::Issuer,
                Record::Finished
            )
            .unwrap()
        );
        assert_eq!(data, original);
        let err = abort_rotation(&mut data, RootType::Import, None).unwrap_err();
        assert!(err.to_string().contains("is not rotating"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_bad_new_ca_is_refused_with_the_reason_and_changes_nothing() {
        let mut data = imported("old");
        let before = data.clone();
        let (cert, key) = enterprise_ca("new", Duration::from_secs(7200));
        let expect = |r: Result<String>, what: &str| {
            let err = r.unwrap_err();
            assert!(err.to_string().contains(what), "{what}: {err}");
            assert!(err.to_string().starts_with("refusing to rotate"), "{err}");
            assert_eq!(err.exit_code(), 2, "{err}");
        };
        // Expires before a cluster CA signed now would.
        let long = now() + Duration::from_secs(30 * 86400);
        expect(rotate_import(&mut data, &cert, &key, long), "expires on");
        // The current CA again.
        let current = String::from_utf8(before[IMPORT_CERT].clone()).unwrap();
        let current_key = String::from_utf8(before[IMPORT_KEY].clone()).unwrap();
        expect(
            rotate_import(&mut data, &current, &current_key, now()),
            "chains to the current root",
        );
        // Not a CA: a cluster CA (path length 0) cannot sign cluster CAs.
        let (leaf_key, issued) = pki::issue(&pki::root("other"), "c1", "a.local");
        expect(
            rotate_import(
                &mut data,
                &issued.chain_pem,
                &leaf_key.to_pkcs8_pem(),
                now(),
            ),
            "path length is 0",
        );
        // A key that does not match.
        expect(
            rotate_import(&mut data, &cert, &current_key, now()),
            "does not match",
        );
        assert_eq!(data, before, "nothing changed");
        // Another backend.
        let err = begin_import_rotation(
            &mut data,
            RootType::Local,
            cert.as_bytes(),
            key.as_bytes(),
            Duration::ZERO,
            now(),
            now(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("root backend is local"), "{err}");
    }

    #[test]
    fn a_local_rotation_aborts_back_to_the_original_root() {
        let a = pki::td("a.local");
        let opts = RootOptions::default();
        let mut data = BTreeMap::new();
        add_missing_roots(&mut data, std::slice::from_ref(&a), &opts, now()).unwrap();
        let original = data.clone();
        let original_root = first_cert(&data[&cert_key(&a)], "root").unwrap();
        let new_fp = begin_rotation(
            &mut data,
            RootType::Local,
            &a,
            &opts,
            Duration::from_secs(9),
            now(),
        )
        .unwrap();
        // Even while draining: the move back starts over.
        let scope = Scope::TrustDomain(a.clone());
        apply_record(
            &mut data,
            RootType::Local,
            &scope,
            Record::Resigned { at: now() },
        )
        .unwrap();
        let err = abort_rotation(&mut data, RootType::Local, None).unwrap_err();
        assert!(err.to_string().contains("--trust-domain"), "{err}");
        let back = abort_rotation(&mut data, RootType::Local, Some(&a)).unwrap();
        assert_eq!(back, fingerprint(&original_root));
        let Signer::Local(roots) = signer_from_material(RootType::Local, &data, now()).unwrap()
        else {
            panic!("not local")
        };
        assert_eq!(roots.active[&a].root_der(), original_root.as_slice());
        let (previous, state) = &roots.rotating[&a];
        assert_eq!(fingerprint(previous), new_fp);
        assert!(state.aborted && state.resigned_at.is_none());
        apply_record(&mut data, RootType::Local, &scope, Record::Finished).unwrap();
        assert_eq!(data, original);
        // A rotation recorded by an earlier federator (no previous key) cannot be aborted.
        begin_rotation(&mut data, RootType::Local, &a, &opts, Duration::ZERO, now()).unwrap();
        data.remove(&previous_key_key(&a));
        let err = abort_rotation(&mut data, RootType::Local, Some(&a)).unwrap_err();
        assert!(err.to_string().contains("let it finish"), "{err}");
    }

    #[test]
    fn a_vault_rotation_swaps_issuers_on_abort() {
        let (old, new) = (pki::root("old"), pki::root("new"));
        let mut data = BTreeMap::new();
        let to = VaultRotation {
            rotation: Rotation::new(Duration::from_secs(60), now()),
            issuer: "next".into(),
            previous_issuer: String::new(),
            root_pem: new.cert_pem(),
            previous_root_pem: old.cert_pem(),
        };
        begin_vault_rotation(&mut data, RootType::Vault, to.clone()).unwrap();
        let err = begin_vault_rotation(&mut data, RootType::Vault, to).unwrap_err();
        assert!(err.to_string().contains("already rotating"), "{err}");
        let r = VaultRotation::from_data(&data).unwrap().unwrap();
        let ir = r.issuer_rotation(new.root_der()).unwrap();
        assert_eq!(ir.previous_root, old.root_der());
        assert_eq!(ir.state.new_root_sha256, fingerprint(new.root_der()));
        apply_record(
            &mut data,
            RootType::Vault,
            &Scope::Issuer,
            Record::Resigned { at: now() },
        )
        .unwrap();
        assert!(
            VaultRotation::from_data(&data)
                .unwrap()
                .unwrap()
                .rotation
                .resigned_at
                .is_some()
        );
        let back = abort_rotation(&mut data, RootType::Vault, None).unwrap();
        assert_eq!(back, fingerprint(old.root_der()));
        let r = VaultRotation::from_data(&data).unwrap().unwrap();
        assert_eq!(
            (r.issuer.as_str(), r.previous_issuer.as_str()),
            ("", "next")
        );
        assert!(r.rotation.aborted && r.rotation.resigned_at.is_none());
        assert!(
            apply_record(&mut data, RootType::Vault, &Scope::Issuer, Record::Finished).unwrap()
        );
        assert!(data.is_empty());
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
