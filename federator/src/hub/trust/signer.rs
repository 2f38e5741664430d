//! The signer: whatever holds the roots and issues cluster CAs under the policy — generated
//! roots per trust domain (`local`), one imported CA (`import`), or Vault/OpenBao (`vault`).
//!
//! It answers two questions for the rest of the hub: what it holds (for the bundle and root
//! rotation, [`Signer::view`]) and, for a checked CSR, the issued cluster CA
//! ([`Signer::sign`]).

use std::collections::BTreeMap;

use federator_api::hub::RootType;
use federator_core::bundle::TrustBundle;
use federator_core::ca::IssuingCa;
use federator_core::cert::fingerprint;
use federator_core::csr::CsrInfo;
use federator_core::identity::TrustDomain;
use federator_core::policy::{ClusterCaRequest, IssuedCa, SigningPolicy};
use time::OffsetDateTime;

use super::vault::VaultSigner;
use crate::hub::plan::federation::{self, Holding, SignerView};
use crate::hub::plan::rotation::{RotationState, Scope};
use crate::{Error, Result};

/// What a signer is asked: a CSR to sign under the policy, for a member, at a time.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The policy that decides every field.
    pub policy: &'a SigningPolicy,
    /// The CSR (its signature verified).
    pub csr: &'a CsrInfo,
    /// The member and trust domain to certify.
    pub request: &'a ClusterCaRequest,
    /// Now.
    pub now: OffsetDateTime,
    /// The root to sign under (SHA-256; `None`: the current one). During the first phase of
    /// a rotation the plan asks for the previous root, which every member still trusts.
    pub root: Option<&'a str>,
}

/// Refuses when `want` (SHA-256) names another root than `held` (DER): the plan asked for a
/// root this signer does not sign under (it changed under the hub; the next plan asks again).
pub(super) fn check_root(want: Option<&str>, held: &[u8]) -> Result<()> {
    match want {
        Some(fp) if fp != fingerprint(held) => Err(Error::Refused(format!(
            "asked to sign under root {fp}, which this hub's signer does not hold (the roots changed; the next attempt asks again)"
        ))),
        _ => Ok(()),
    }
}

/// The CA to sign with: the current one, or the previous one if `want` names its root.
fn pick<'c>(
    current: &'c IssuingCa,
    previous: Option<&'c IssuingCa>,
    want: Option<&str>,
) -> Result<&'c IssuingCa> {
    match previous {
        Some(p) if want.is_some_and(|fp| fp == fingerprint(p.root_der())) => Ok(p),
        _ => check_root(want, current.root_der()).map(|()| current),
    }
}

/// The CAs that sign cluster CAs.
#[derive(Debug)]
pub enum Signer {
    /// One root per trust domain, plus the previous root of each trust domain in rotation.
    Local(LocalRoots),
    /// One imported CA for all trust domains (while rotating: the previous one's root, and
    /// the previous CA itself to sign with until every member trusts the new root).
    Import(
        Box<IssuingCa>,
        Option<IssuerRotation>,
        Option<Box<IssuingCa>>,
    ),
    /// Vault signs for all trust domains (with the issuer a rotation moves to, if any).
    Vault(Box<VaultSigner>, Option<IssuerRotation>),
}

/// A rotation of the one issuer of the `import` and `vault` backends: the previous root (DER,
/// still trusted) and the rotation's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerRotation {
    /// The root of the previous issuer.
    pub previous_root: Vec<u8>,
    /// Where the rotation stands.
    pub state: RotationState,
}

/// The local backend's roots.
#[derive(Debug, Default)]
pub struct LocalRoots {
    /// The signing root of each trust domain.
    pub active: BTreeMap<TrustDomain, IssuingCa>,
    /// Trust domains in rotation: the previous root (DER, still trusted) and the rotation.
    pub rotating: BTreeMap<TrustDomain, (Vec<u8>, RotationState)>,
    /// The previous root with its key, of trust domains in rotation: it signs until every
    /// member trusts the new root (absent for a rotation an earlier federator started).
    pub previous: BTreeMap<TrustDomain, IssuingCa>,
}

impl Signer {
    /// The backend.
    pub fn root_type(&self) -> RootType {
        match self {
            Signer::Local(_) => RootType::Local,
            Signer::Import(..) => RootType::Import,
            Signer::Vault(..) => RootType::Vault,
        }
    }

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
            Signer::Import(ca, ..) => Ok(ca.root_der()),
            Signer::Vault(v, _) => Ok(v.root_der()),
        }
    }

    /// The rotation of the one issuer (`import`, `vault`), if one is in progress.
    pub fn issuer_rotation(&self) -> Option<&IssuerRotation> {
        match self {
            Signer::Local(_) => None,
            Signer::Import(_, r, _) | Signer::Vault(_, r) => r.as_ref(),
        }
    }

    /// What the signer holds for the trust domains `tds`, and every rotation in progress.
    pub fn view<'a>(&self, tds: impl IntoIterator<Item = &'a TrustDomain>) -> Result<SignerView> {
        let mut view = SignerView::default();
        for td in tds {
            let (previous, previous_signs) = match self {
                Signer::Local(roots) => (
                    roots.rotating.get(td).map(|(der, _)| der.clone()),
                    roots.previous.contains_key(td),
                ),
                Signer::Import(_, r, ca) => {
                    (r.as_ref().map(|r| r.previous_root.clone()), ca.is_some())
                }
                Signer::Vault(v, r) => (
                    r.as_ref().map(|r| r.previous_root.clone()),
                    v.holds_previous(),
                ),
            };
            view.roots.insert(
                td.clone(),
                Holding {
                    root: self.root_der_for(td)?.to_vec(),
                    previous_signs: previous_signs && previous.is_some(),
                    previous,
                },
            );
        }
        if let Signer::Local(roots) = self {
            for (td, (_, state)) in &roots.rotating {
                view.rotations
                    .insert(Scope::TrustDomain(td.clone()), state.clone());
            }
        }
        if let Some(r) = self.issuer_rotation() {
            view.rotations.insert(Scope::Issuer, r.state.clone());
        }
        Ok(view)
    }

    /// The bundle for a set of trust domains: each one's root (and previous root).
    pub fn bundle_for<'a>(
        &self,
        tds: impl IntoIterator<Item = &'a TrustDomain>,
    ) -> Result<TrustBundle> {
        Ok(federation::bundle(&self.view(tds)?.roots)?)
    }

    /// Signs a cluster CA under the policy, under the root the ask names (with Vault, Vault
    /// signs the policy's fields and the hub checks the answer).
    pub async fn sign(&self, ask: &Ask<'_>) -> Result<IssuedCa> {
        let Ask {
            policy,
            csr,
            request,
            now,
            root,
        } = *ask;
        match self {
            Signer::Local(roots) => {
                let issuer = roots.active.get(&request.trust_domain).ok_or_else(|| {
                    Error::Refused(format!(
                        "no root for trust domain {} yet",
                        request.trust_domain
                    ))
                })?;
                let previous = roots.previous.get(&request.trust_domain);
                Ok(policy.sign(pick(issuer, previous, root)?, csr, request, now)?)
            }
            Signer::Import(ca, _, previous) => {
                let issuer = pick(ca, previous.as_deref(), root)?;
                Ok(policy.sign(issuer, csr, request, now)?)
            }
            Signer::Vault(v, _) => v.sign(ask).await,
        }
    }

    /// The roots: (trust domain, or `*` for a single issuer serving all, SHA-256 fingerprint).
    pub fn root_fingerprints(&self) -> Vec<(String, String)> {
        match self {
            Signer::Local(roots) => roots
                .active
                .iter()
                .map(|(td, ca)| (td.to_string(), fingerprint(ca.root_der())))
                .collect(),
            Signer::Import(ca, ..) => vec![("*".into(), fingerprint(ca.root_der()))],
            Signer::Vault(v, _) => vec![("*".into(), fingerprint(v.root_der()))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_testkit::pki;
    use std::time::Duration;

    fn local(tds: &[&str]) -> LocalRoots {
        LocalRoots {
            active: tds.iter().map(|td| (pki::td(td), pki::root(td))).collect(),
            rotating: BTreeMap::new(),
            previous: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn local_roots_sign_for_their_own_trust_domain_only() {
        let signer = Signer::Local(local(&["a.local"]));
        let (_, pem) = pki::csr("east", "a.local");
        let csr = CsrInfo::parse(pem.as_bytes()).unwrap();
        let policy = SigningPolicy::default();
        let now = OffsetDateTime::now_utc();
        let (east_in_a, west_in_b, west_in_a) = (
            pki::request("east", "a.local"),
            pki::request("west", "b.local"),
            pki::request("west", "a.local"),
        );
        let ask = |csr, request| Ask {
            policy: &policy,
            csr,
            request,
            now,
            root: None,
        };
        let issued = signer.sign(&ask(&csr, &east_in_a)).await.unwrap();
        let root = signer.root_der_for(&pki::td("a.local")).unwrap();
        assert!(issued.chain_pem.contains(&pki::pem(root)));
        // A trust domain without a root yet is a refusal, not a crash.
        let (_, pem) = pki::csr("west", "b.local");
        let other = CsrInfo::parse(pem.as_bytes()).unwrap();
        let err = signer.sign(&ask(&other, &west_in_b)).await.unwrap_err();
        assert!(err.to_string().contains("no root for trust domain b.local"));
        // The policy refuses what it does not grant: a CSR for another trust domain.
        let err = signer.sign(&ask(&other, &west_in_a)).await.unwrap_err();
        assert!(matches!(err, Error::Core(_)), "{err:?}");
        assert!(!err.retry_later());
    }

    #[test]
    fn the_view_holds_previous_roots_and_every_rotation() {
        let mut roots = local(&["a.local", "b.local"]);
        let previous = pki::root("old a");
        let state = RotationState {
            new_root_sha256: fingerprint(roots.active[&pki::td("a.local")].root_der()),
            previous_root_sha256: fingerprint(previous.root_der()),
            drain: Duration::from_secs(60),
            resigned_at: None,
            aborted: false,
        };
        roots.rotating.insert(
            pki::td("a.local"),
            (previous.root_der().to_vec(), state.clone()),
        );
        let signer = Signer::Local(roots);
        let a = pki::td("a.local");
        let view = signer.view([&a]).unwrap();
        assert_eq!(view.roots.len(), 1, "only the trust domains asked for");
        assert_eq!(
            view.roots[&a].previous.as_deref(),
            Some(previous.root_der())
        );
        assert_eq!(view.rotations[&Scope::TrustDomain(a.clone())], state);
        let bundle = signer.bundle_for([&a]).unwrap();
        assert_eq!(bundle.roots_of(&a).len(), 2);
        assert!(signer.view([&pki::td("c.local")]).is_err());
        assert_eq!(signer.root_fingerprints().len(), 2);
        assert_eq!(signer.root_type(), RootType::Local);
    }

    #[test]
    fn one_imported_ca_serves_every_trust_domain() {
        let signer = Signer::Import(Box::new(pki::root("imported")), None, None);
        let (a, b) = (pki::td("a.local"), pki::td("b.local"));
        let view = signer.view([&a, &b]).unwrap();
        assert_eq!(view.roots[&a], view.roots[&b]);
        assert!(view.rotations.is_empty());
        assert_eq!(signer.root_fingerprints()[0].0, "*");
    }

    #[test]
    fn a_rotating_issuer_keeps_the_previous_root_in_every_trust_domain() {
        let (old, new) = (pki::root("old"), pki::root("new"));
        let state = RotationState {
            new_root_sha256: fingerprint(new.root_der()),
            previous_root_sha256: fingerprint(old.root_der()),
            drain: Duration::from_secs(60),
            resigned_at: None,
            aborted: false,
        };
        let signer = Signer::Import(
            Box::new(new),
            Some(IssuerRotation {
                previous_root: old.root_der().to_vec(),
                state: state.clone(),
            }),
            None,
        );
        let (a, b) = (pki::td("a.local"), pki::td("b.local"));
        let view = signer.view([&a, &b]).unwrap();
        for td in [&a, &b] {
            assert_eq!(view.roots[td].previous.as_deref(), Some(old.root_der()));
        }
        assert_eq!(
            view.rotations.len(),
            1,
            "one rotation for every trust domain"
        );
        assert_eq!(view.rotations[&Scope::Issuer], state);
        assert_eq!(signer.bundle_for([&a, &b]).unwrap().roots_of(&b).len(), 2);
    }

    /// A second copy of a CA (`IssuingCa` is not `Clone`: it holds a key).
    fn copy(ca: &IssuingCa) -> IssuingCa {
        let key = ca.key().to_pkcs8_pem();
        IssuingCa::import(
            ca.cert_pem().as_bytes(),
            key.as_bytes(),
            OffsetDateTime::now_utc(),
        )
        .unwrap()
    }

    /// The root (SHA-256) of what `signer` issues when asked to sign under `root`.
    async fn root_signed_under(signer: &Signer, root: Option<&str>) -> Result<String> {
        let (_, pem) = pki::csr("east", "a.local");
        let csr = CsrInfo::parse(pem.as_bytes()).unwrap();
        let (policy, request) = (SigningPolicy::default(), pki::request("east", "a.local"));
        let ask = Ask {
            policy: &policy,
            csr: &csr,
            request: &request,
            now: OffsetDateTime::now_utc(),
            root,
        };
        let issued = signer.sign(&ask).await?;
        let certs =
            federator_core::cert::parse_pem_certificates(issued.chain_pem.as_bytes(), "chain")
                .unwrap();
        Ok(fingerprint(certs.last().unwrap()))
    }

    #[tokio::test]
    async fn during_a_rotation_it_signs_under_the_root_asked_for() {
        let (old, new) = (pki::root("old"), pki::root("new"));
        let (old_fp, new_fp) = (fingerprint(old.root_der()), fingerprint(new.root_der()));
        let state = RotationState {
            new_root_sha256: new_fp.clone(),
            previous_root_sha256: old_fp.clone(),
            drain: Duration::from_secs(60),
            resigned_at: None,
            aborted: false,
        };
        let rotation = IssuerRotation {
            previous_root: old.root_der().to_vec(),
            state: state.clone(),
        };
        let a = pki::td("a.local");
        let import = Signer::Import(
            Box::new(copy(&new)),
            Some(rotation.clone()),
            Some(Box::new(copy(&old))),
        );
        let mut roots = local(&[]);
        roots.active.insert(a.clone(), copy(&new));
        roots
            .rotating
            .insert(a.clone(), (old.root_der().to_vec(), state));
        roots.previous.insert(a.clone(), copy(&old));
        let local = Signer::Local(roots);
        for signer in [&import, &local] {
            assert!(signer.view([&a]).unwrap().roots[&a].previous_signs);
            assert_eq!(
                root_signed_under(signer, Some(&old_fp)).await.unwrap(),
                old_fp
            );
            assert_eq!(
                root_signed_under(signer, Some(&new_fp)).await.unwrap(),
                new_fp
            );
            assert_eq!(root_signed_under(signer, None).await.unwrap(), new_fp);
            let err = root_signed_under(signer, Some("another-root"))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("does not hold"), "{err}");
        }
        // Without the previous CA, only the new root signs.
        let without = Signer::Import(Box::new(new), Some(rotation), None);
        assert!(!without.view([&a]).unwrap().roots[&a].previous_signs);
        let err = root_signed_under(&without, Some(&old_fp))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not hold"), "{err}");
    }
}
