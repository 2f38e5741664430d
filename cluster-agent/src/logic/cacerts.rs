//! Step 3: the `istio-system/cacerts` the cluster should have, and whether it has it.

use std::collections::BTreeMap;

use federator_api::member::{ClusterTrustSpec, Installed};
use federator_core::bundle::TrustBundle;
use federator_core::cacerts::{self, CaCerts};
use federator_core::cert::{self, CertInfo};
use federator_core::identity::TrustDomain;
use federator_core::key::PrivateKey;
use time::OffsetDateTime;

use super::material::InstalledMaterial;
use super::problem::Problem;

/// The trust bundle in `spec.bundle`.
pub fn bundle_from_spec(spec: &ClusterTrustSpec) -> Result<TrustBundle, Problem> {
    let field = |source| Problem::Field {
        field: "spec.bundle",
        source,
    };
    let mut entries = Vec::with_capacity(spec.bundle.len());
    for e in &spec.bundle {
        let td = TrustDomain::new(&e.trust_domain).map_err(field)?;
        entries.push((td, e.roots_pem.as_str()));
    }
    TrustBundle::from_domain_pems(entries.iter().map(|(td, pem)| (td, *pem))).map_err(field)
}

/// What the mesh config's `caCertificates` are made from: `spec.bundle` and the roots of the
/// foreign SPIFFE trust domains in `spec.foreign` (those the bundle already holds, trusted
/// mesh-wide, once).
pub fn mesh_bundle_from_spec(spec: &ClusterTrustSpec) -> Result<TrustBundle, Problem> {
    let field = |source| Problem::Field {
        field: "spec.foreign",
        source,
    };
    let mut bundle = bundle_from_spec(spec)?;
    for e in &spec.foreign {
        let td = TrustDomain::new(&e.trust_domain).map_err(field)?;
        if bundle.trust_domains().any(|t| *t == td) {
            continue;
        }
        let one = TrustBundle::from_domain_pems([(&td, e.roots_pem.as_str())]).map_err(field)?;
        for der in one.roots_of(&td) {
            bundle.add(&td, der).map_err(field)?;
        }
    }
    Ok(bundle)
}

/// The four files `cacerts` must hold: the installed chain and key, and the whole bundle as
/// `root-cert.pem`. Refuses material that istiod would not load (or peers would reject), as
/// [`cacerts::inspect`] finds it: writing it would only make istiod keep its old CA (hot
/// reload) or fail to start.
pub fn desired_cacerts(
    installed: &InstalledMaterial,
    bundle: &TrustBundle,
    now: OffsetDateTime,
) -> Result<CaCerts, Problem> {
    if bundle.is_empty() {
        return Err(Problem::EmptyBundle);
    }
    let key = PrivateKey::from_pem(installed.key_pem.expose().as_bytes(), "installed key")
        .map_err(Problem::Material)?;
    let cacerts =
        CaCerts::assemble(&installed.chain_pem, &key, bundle).map_err(Problem::Material)?;
    let inspection = cacerts::inspect(&cacerts.files(), now);
    if !inspection.is_ok() {
        let list: Vec<String> = inspection
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.file, p.message))
            .collect();
        return Err(Problem::InvalidCacerts(list.join("; ")));
    }
    Ok(cacerts)
}

/// Whether `actual` (the Secret's data, `None` when it does not exist) differs from `desired`
/// in any byte, including extra keys such as `istio-generated`.
pub fn differs(actual: Option<&BTreeMap<String, Vec<u8>>>, desired: &CaCerts) -> bool {
    actual != Some(&desired.files())
}

/// What `status.installed` reports for material in `cacerts`.
pub fn installed_status(
    installed: &InstalledMaterial,
    bundle_generation: i64,
) -> Result<Installed, Problem> {
    let chain = cert::parse_pem_certificates(installed.chain_pem.as_bytes(), "installed chain")
        .map_err(Problem::Material)?;
    let first = chain.first().ok_or(Problem::EmptyChain)?;
    let info = CertInfo::from_der(first).map_err(Problem::Material)?;
    let (_, not_after) = cert::validity(&cert::parse_der(first).map_err(Problem::Material)?);
    Ok(Installed {
        serial: info.serial,
        sha256: info.sha256,
        not_after: federator_api::fields::time(not_after),
        bundle_generation,
        csr_generation: installed.generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::csr::{fresh_pending, identity};
    use crate::logic::testutil::*;
    use federator_core::key::KeyAlgorithm;

    fn installed_for(root: &federator_core::ca::IssuingCa) -> InstalledMaterial {
        let s = spec_with_bundle(&[("east.local", root)], 1);
        let id = identity(&s, None).unwrap();
        let p = fresh_pending(&id, KeyAlgorithm::EcdsaP256, 1).unwrap();
        let signed = sign(root, &p, "east", "east.local");
        InstalledMaterial {
            key_pem: p.key_pem,
            chain_pem: signed.chain_pem,
            generation: 1,
        }
    }

    #[test]
    fn desired_cacerts_is_valid_and_byte_stable() {
        let now = OffsetDateTime::now_utc();
        let east = root_ca("east root");
        let west = root_ca("west root");
        let inst = installed_for(&east);
        let s = spec_with_bundle(&[("east.local", &east), ("west.local", &west)], 1);
        let bundle = bundle_from_spec(&s).unwrap();
        let a = desired_cacerts(&inst, &bundle, now).unwrap();
        let b = desired_cacerts(&inst, &bundle, now).unwrap();
        assert_eq!(a.files(), b.files());
        assert_eq!(a.root_cert, bundle.to_pem());
        assert!(cacerts::inspect(&a.files(), now).is_ok());
        assert_eq!(
            federator_core::cert::parse_pem_certificates(a.root_cert.as_bytes(), "r")
                .unwrap()
                .len(),
            2
        );

        assert!(!differs(Some(&a.files()), &a));
        assert!(differs(None, &a));
        let mut extra = a.files();
        extra.insert("istio-generated".into(), Vec::new());
        assert!(differs(Some(&extra), &a));
        let mut edited = a.files();
        edited.insert("ca-cert.pem".into(), b"garbage".to_vec());
        assert!(differs(Some(&edited), &a));
    }

    #[test]
    fn refuses_material_istiod_would_not_load() {
        let now = OffsetDateTime::now_utc();
        let east = root_ca("east root");
        let other = root_ca("other root");
        let inst = installed_for(&east);
        // The bundle no longer holds the root the installed CA chains to.
        let s = spec_with_bundle(&[("east.local", &other)], 1);
        let err = desired_cacerts(&inst, &bundle_from_spec(&s).unwrap(), now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not make valid cacerts"), "{err}");
        assert!(
            desired_cacerts(&inst, &TrustBundle::new(), now)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        // Key and chain that do not belong together.
        let mut mixed = inst.clone();
        mixed.key_pem = installed_for(&east).key_pem;
        let s = spec_with_bundle(&[("east.local", &east)], 1);
        assert!(desired_cacerts(&mixed, &bundle_from_spec(&s).unwrap(), now).is_err());
    }

    #[test]
    fn bundle_from_spec_refuses_bad_entries() {
        let east = root_ca("east root");
        let mut s = spec_with_bundle(&[("east.local", &east)], 1);
        s.bundle[0].trust_domain = "Not Valid".into();
        assert!(bundle_from_spec(&s).is_err());
        s.bundle[0].trust_domain = "east.local".into();
        s.bundle[0].roots_pem = "garbage".into();
        assert!(bundle_from_spec(&s).is_err());
    }

    #[test]
    fn foreign_roots_go_to_the_mesh_bundle_only() {
        let east = root_ca("east root");
        let spire = root_ca("spire root");
        let mut s = spec_with_bundle(&[("east.local", &east)], 1);
        s.foreign = vec![federator_api::member::BundleEntry {
            trust_domain: "spire.example".into(),
            roots_pem: spire.cert_pem(),
        }];
        let cacerts_bundle = bundle_from_spec(&s).unwrap();
        assert_eq!(
            cacerts_bundle.trust_domains().count(),
            1,
            "not in root-cert.pem"
        );
        let mesh = mesh_bundle_from_spec(&s).unwrap();
        let tds: Vec<String> = mesh.trust_domains().map(ToString::to_string).collect();
        assert_eq!(tds, ["east.local", "spire.example"]);
        // Trusted mesh-wide: in the bundle already, so once.
        s.bundle.push(s.foreign[0].clone());
        assert_eq!(mesh_bundle_from_spec(&s).unwrap().roots().len(), 2);
        s.foreign[0].roots_pem = "garbage".into();
        s.bundle.pop();
        let err = mesh_bundle_from_spec(&s).unwrap_err().to_string();
        assert!(err.contains("spec.foreign"), "{err}");
    }

    #[test]
    fn installed_status_describes_the_cluster_ca() {
        let east = root_ca("east root");
        let inst = installed_for(&east);
        let st = installed_status(&inst, 7).unwrap();
        assert_eq!(st.bundle_generation, 7);
        assert_eq!(st.csr_generation, 1);
        assert_eq!(st.sha256.len(), 64);
        assert!(!st.serial.is_empty());
        assert!(federator_api::fields::offset(&st.not_after) > OffsetDateTime::now_utc());
    }
}
