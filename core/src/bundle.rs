//! Trust bundles: the roots every member must trust, keyed by trust domain.
//!
//! A bundle is a set. Its PEM form is canonical, so the same set always gives the same bytes
//! (istiod compares `root-cert.pem` byte for byte, and ignores a whole `cacerts` update when
//! those bytes change in a way it does not accept):
//!
//! * one `CERTIFICATE` block per distinct root, `\n` line endings, 64-column base64, no
//!   headers, a trailing newline, no duplicates;
//! * roots ordered by NotBefore, then by SHA-256 fingerprint. A root created later sorts
//!   later, so adding a new root during a rotation appends it and removing the oldest root
//!   drops a prefix: both keep the old text a substring of the new one (or the reverse), the
//!   rule istiod up to 1.29 applies; 1.30+ compares the sets.
//!
//! [`BundleChange`] classifies a change as a pure add, a pure remove or a mix: with
//! `ISTIO_MULTIROOT_MESH=true`, istiod hot-reloads the first two and ignores the third.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::cert::{self, CertInfo};
use crate::identity::TrustDomain;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Root {
    // Field order is the canonical order.
    not_before: i64,
    fingerprint: String,
    der: Vec<u8>,
}

impl Root {
    fn parse(der: Vec<u8>, source_name: &str) -> Result<Self> {
        let parsed =
            cert::parse_der(&der).map_err(|e| Error::Certificate(format!("{source_name}: {e}")))?;
        if !parsed.is_ca() {
            return Err(Error::Certificate(format!(
                "{source_name}: {} is not a CA certificate and cannot be a trust anchor",
                parsed.subject()
            )));
        }
        let not_before = cert::validity(&parsed).0.unix_timestamp();
        Ok(Self {
            not_before,
            fingerprint: cert::fingerprint(&der),
            der,
        })
    }
}

/// A set of roots keyed by trust domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustBundle {
    domains: BTreeMap<TrustDomain, BTreeSet<Root>>,
}

/// How the flattened set of roots (what lands in `root-cert.pem`) changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BundleChange {
    /// The same roots.
    Unchanged,
    /// Only new roots (fingerprints).
    PureAdd {
        /// Fingerprints of the roots added.
        added: Vec<String>,
    },
    /// Only removed roots (fingerprints).
    PureRemove {
        /// Fingerprints of the roots removed.
        removed: Vec<String>,
    },
    /// Roots added and removed at once: istiod will not hot-reload this.
    Mixed {
        /// Fingerprints of the roots added.
        added: Vec<String>,
        /// Fingerprints of the roots removed.
        removed: Vec<String>,
    },
}

impl BundleChange {
    /// Compares two flattened root sets (DER certificates, any order, duplicates ignored).
    pub fn between(old: &[Vec<u8>], new: &[Vec<u8>]) -> Self {
        let old: BTreeSet<String> = old.iter().map(|d| cert::fingerprint(d)).collect();
        let new: BTreeSet<String> = new.iter().map(|d| cert::fingerprint(d)).collect();
        let added: Vec<String> = new.difference(&old).cloned().collect();
        let removed: Vec<String> = old.difference(&new).cloned().collect();
        match (added.is_empty(), removed.is_empty()) {
            (true, true) => BundleChange::Unchanged,
            (false, true) => BundleChange::PureAdd { added },
            (true, false) => BundleChange::PureRemove { removed },
            (false, false) => BundleChange::Mixed { added, removed },
        }
    }

    /// Whether istiod (with `ISTIO_MULTIROOT_MESH=true`) can take this change without a
    /// restart.
    pub fn is_hot_reloadable(&self) -> bool {
        !matches!(self, BundleChange::Mixed { .. })
    }
}

impl TrustBundle {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a bundle from PEM text per trust domain.
    pub fn from_domain_pems<'a>(
        entries: impl IntoIterator<Item = (&'a TrustDomain, &'a str)>,
    ) -> Result<Self> {
        let mut bundle = Self::new();
        for (td, pem) in entries {
            for der in
                cert::parse_pem_certificates(pem.as_bytes(), &format!("bundle entry for {td}"))?
            {
                // Not `add`: reporting the change of every root would make this quadratic.
                bundle.insert(td, der)?;
            }
        }
        Ok(bundle)
    }

    /// Adds a root (DER) for a trust domain and reports how the flattened set changed.
    /// Refuses a certificate that is not a CA.
    pub fn add(&mut self, trust_domain: &TrustDomain, root_der: Vec<u8>) -> Result<BundleChange> {
        let before = self.roots();
        self.insert(trust_domain, root_der)?;
        Ok(BundleChange::between(&before, &self.roots()))
    }

    fn insert(&mut self, trust_domain: &TrustDomain, root_der: Vec<u8>) -> Result<()> {
        let root = Root::parse(root_der, &format!("root for {trust_domain}"))?;
        self.domains
            .entry(trust_domain.clone())
            .or_default()
            .insert(root);
        Ok(())
    }

    /// Removes one root (by SHA-256 fingerprint) from a trust domain and reports the change.
    pub fn remove(&mut self, trust_domain: &TrustDomain, fingerprint: &str) -> BundleChange {
        let before = self.roots();
        if let Some(set) = self.domains.get_mut(trust_domain) {
            set.retain(|r| r.fingerprint != fingerprint);
            if set.is_empty() {
                self.domains.remove(trust_domain);
            }
        }
        BundleChange::between(&before, &self.roots())
    }

    /// Removes a trust domain with all its roots and reports the change.
    pub fn remove_trust_domain(&mut self, trust_domain: &TrustDomain) -> BundleChange {
        let before = self.roots();
        self.domains.remove(trust_domain);
        BundleChange::between(&before, &self.roots())
    }

    /// How `newer` differs from `self`, on the flattened sets.
    pub fn diff(&self, newer: &TrustBundle) -> BundleChange {
        BundleChange::between(&self.roots(), &newer.roots())
    }

    /// The trust domains, in order.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.domains.keys()
    }

    /// Whether the bundle has no roots.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The roots of one trust domain (DER), in canonical order.
    pub fn roots_of(&self, trust_domain: &TrustDomain) -> Vec<Vec<u8>> {
        self.domains
            .get(trust_domain)
            .map(|s| s.iter().map(|r| r.der.clone()).collect())
            .unwrap_or_default()
    }

    /// Every distinct root of every trust domain (DER), in canonical order.
    pub fn roots(&self) -> Vec<Vec<u8>> {
        let all: BTreeSet<&Root> = self.domains.values().flatten().collect();
        all.into_iter().map(|r| r.der.clone()).collect()
    }

    /// The canonical PEM of every distinct root: the content of `root-cert.pem`.
    pub fn to_pem(&self) -> String {
        cert::to_pem(self.roots().iter().map(Vec::as_slice))
    }

    /// The canonical PEM of one trust domain's roots.
    pub fn domain_pem(&self, trust_domain: &TrustDomain) -> String {
        cert::to_pem(self.roots_of(trust_domain).iter().map(Vec::as_slice))
    }

    /// A short, stable identifier of the bundle's content (the first 16 hex digits of the
    /// SHA-256 of the canonical per-domain PEM), for status reporting.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for td in self.domains.keys() {
            h.update(td.as_str().as_bytes());
            h.update([0]);
            h.update(self.domain_pem(td).as_bytes());
        }
        hex::encode(h.finalize())[..16].to_owned()
    }

    /// Summaries of every distinct root.
    pub fn root_infos(&self) -> Result<Vec<CertInfo>> {
        self.roots().iter().map(|d| CertInfo::from_der(d)).collect()
    }
}

/// A SPIFFE trust bundle (SPIFFE Trust Domain and Bundle spec §4): a JWK set whose keys are
/// the trust domain's X.509 roots, each with its certificate in `x5c` and the key parameters
/// of that certificate (what SPIRE's decoder requires; [`crate::spiffe::parse_bundle`] reads
/// it back).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SpiffeBundle {
    /// The roots as JWKs.
    pub keys: Vec<Jwk>,
    /// Increases with every change of the bundle.
    pub spiffe_sequence: i64,
    /// How often consumers should check back, in seconds (§4.1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_refresh_hint: Option<u64>,
}

/// One root as a JWK (`use: x509-svid`, no `kid`: X509-SVID §6.1).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Jwk {
    /// Always `x509-svid`.
    #[serde(rename = "use")]
    pub use_: String,
    /// `EC`, `RSA` or `OKP`.
    pub kty: String,
    /// The curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate (base64url).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate (base64url).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus (base64url).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent (base64url).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// The certificate (base64 DER).
    pub x5c: Vec<String>,
}

impl TrustBundle {
    /// One trust domain's roots as a SPIFFE bundle.
    pub fn spiffe_bundle(&self, trust_domain: &TrustDomain, sequence: i64) -> Result<SpiffeBundle> {
        use base64::Engine as _;
        let mut keys = Vec::new();
        for der in self.roots_of(trust_domain) {
            let key = crate::spiffe::public_jwk(&der)
                .map_err(|e| Error::Key(format!("root of {trust_domain}: {e}")))?;
            keys.push(Jwk {
                use_: crate::spiffe::X509_SVID.into(),
                kty: key.kty,
                crv: key.crv,
                x: key.x,
                y: key.y,
                n: key.n,
                e: key.e,
                x5c: vec![base64::engine::general_purpose::STANDARD.encode(&der)],
            });
        }
        Ok(SpiffeBundle {
            keys,
            spiffe_sequence: sequence,
            spiffe_refresh_hint: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{IssuingCa, RootOptions};
    use proptest::prelude::*;
    use time::OffsetDateTime;

    fn roots(n: usize) -> Vec<Vec<u8>> {
        // Distinct NotBefore values make the canonical order observable.
        (0..n)
            .map(|i| {
                let now = OffsetDateTime::now_utc() + time::Duration::minutes(i as i64);
                IssuingCa::create_root(&RootOptions::default(), now)
                    .unwrap()
                    .cert_der()
                    .to_vec()
            })
            .collect()
    }

    fn td(s: &str) -> TrustDomain {
        TrustDomain::new(s).unwrap()
    }

    #[test]
    fn add_and_remove_report_pure_changes() {
        let r = roots(3);
        let mut b = TrustBundle::new();
        assert!(matches!(
            b.add(&td("a.local"), r[0].clone()).unwrap(),
            BundleChange::PureAdd { .. }
        ));
        assert_eq!(
            b.add(&td("a.local"), r[0].clone()).unwrap(),
            BundleChange::Unchanged
        );
        // The same root under a second trust domain does not change root-cert.pem.
        assert_eq!(
            b.add(&td("b.local"), r[0].clone()).unwrap(),
            BundleChange::Unchanged
        );
        assert!(matches!(
            b.add(&td("b.local"), r[1].clone()).unwrap(),
            BundleChange::PureAdd { .. }
        ));
        assert_eq!(b.roots().len(), 2);
        let fp1 = cert::fingerprint(&r[1]);
        assert_eq!(
            b.remove(&td("b.local"), &fp1),
            BundleChange::PureRemove { removed: vec![fp1] }
        );
        assert_eq!(
            b.remove_trust_domain(&td("b.local")),
            BundleChange::Unchanged
        );
        let mut other = b.clone();
        other.remove_trust_domain(&td("a.local"));
        other.add(&td("c.local"), r[2].clone()).unwrap();
        assert!(!b.diff(&other).is_hot_reloadable());
    }

    #[test]
    fn spiffe_bundle_lists_the_domain_roots_as_jwks() {
        let r = roots(2);
        let mut b = TrustBundle::new();
        b.add(&td("a.local"), r[0].clone()).unwrap();
        b.add(&td("b.local"), r[1].clone()).unwrap();
        let sb = b.spiffe_bundle(&td("a.local"), 7).unwrap();
        assert_eq!(sb.spiffe_sequence, 7);
        assert_eq!(sb.keys.len(), 1);
        let k = &sb.keys[0];
        assert_eq!(
            (k.use_.as_str(), k.kty.as_str(), k.crv.as_deref()),
            ("x509-svid", "EC", Some("P-256"))
        );
        assert_eq!(
            k.x.as_ref().unwrap().len(),
            43,
            "32 bytes, base64url without padding"
        );
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&k.x5c[0])
                .unwrap(),
            r[0]
        );
    }

    #[test]
    fn from_domain_pems_builds_the_same_set_as_add() {
        let r = roots(3);
        let pem = |ders: &[Vec<u8>]| cert::to_pem(ders.iter().map(Vec::as_slice));
        let (a, b) = (td("a.local"), td("b.local"));
        let (pa, pb) = (pem(&r[..2]), pem(&r[1..]));
        let built = TrustBundle::from_domain_pems([(&a, pa.as_str()), (&b, pb.as_str())]).unwrap();
        let mut added = TrustBundle::new();
        for der in &r[..2] {
            added.add(&a, der.clone()).unwrap();
        }
        for der in &r[1..] {
            added.add(&b, der.clone()).unwrap();
        }
        assert_eq!(built, added);
        assert_eq!(built.roots().len(), 3);
    }

    /// Found by review while fuzzing `trust_bundle` (regression fuzz/regressions/trust_bundle/
    /// ec-root-with-empty-point): a CA root whose P-256 key is an empty bit string made
    /// `spiffe_bundle` compute `0 - 1` and panic; a compressed point gave a wrong JWK.
    #[test]
    fn spiffe_bundle_refuses_malformed_ec_points() {
        let der = roots(1).remove(0);
        for point in [&[][..], &[0x04], &[0x02; 33]] {
            let bad = crate::fuzz::with_ec_point(&der, point).unwrap();
            let mut b = TrustBundle::new();
            b.add(&td("a.local"), bad).unwrap();
            let err = b.spiffe_bundle(&td("a.local"), 1).unwrap_err().to_string();
            assert!(err.contains("is not an uncompressed point"), "{err}");
        }
    }

    #[test]
    fn newer_roots_append() {
        let r = roots(3);
        let mut b = TrustBundle::new();
        b.add(&td("a.local"), r[0].clone()).unwrap();
        b.add(&td("a.local"), r[1].clone()).unwrap();
        let old = b.to_pem();
        b.add(&td("a.local"), r[2].clone()).unwrap();
        let new = b.to_pem();
        assert!(new.starts_with(&old), "adding a newer root must append");
        b.remove(&td("a.local"), &cert::fingerprint(&r[0]));
        assert!(
            new.ends_with(&b.to_pem()),
            "removing the oldest root must drop a prefix"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the insertion order, trust domains and duplicates, the same set gives the
        /// same bytes, and those bytes parse back to the same set.
        #[test]
        fn pem_is_byte_stable(order in Just((0..5usize).collect::<Vec<_>>()).prop_shuffle(),
                              domains in proptest::collection::vec(0..3usize, 5),
                              dup in 0..5usize) {
            static ROOTS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
            let r = ROOTS.get_or_init(|| roots(5));
            let names = [td("a.local"), td("b.local"), td("c.local")];
            let mut sorted = TrustBundle::new();
            for root in r { sorted.add(&names[0], root.clone()).unwrap(); }
            let mut shuffled = TrustBundle::new();
            for (k, &i) in order.iter().enumerate() { shuffled.add(&names[domains[k]], r[i].clone()).unwrap(); }
            shuffled.add(&names[1], r[dup].clone()).unwrap();
            prop_assert_eq!(sorted.to_pem(), shuffled.to_pem());
            let reparsed = cert::parse_pem_certificates(shuffled.to_pem().as_bytes(), "x").unwrap();
            prop_assert_eq!(reparsed.len(), 5);
            prop_assert_eq!(BundleChange::between(&reparsed, &sorted.roots()), BundleChange::Unchanged);
        }
    }
}
