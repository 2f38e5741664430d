//! Step 5: `caCertificates` in the mesh config (`istio-system/istio`, key `mesh`).
//!
//! For every root of every trust domain in the bundle other than the cluster's own, the mesh
//! config gets an entry `{pem: <that root>, trustDomains: [<its trust domain>]}`, so istiod
//! accepts SPIFFE IDs of those trust domains. One entry per root: istiod checks only the first
//! PEM block of an entry (`verifyTrustAnchor`), so a trust domain in the middle of a root
//! rotation gets one entry per root. Entries federator did not write are kept as they are;
//! the ones it wrote are remembered by the SHA-256 of their `pem` in the annotation
//! `federator.io/managed-ca-certificates` (comma-separated, sorted). Every other field of the
//! mesh config is left untouched; the YAML is rewritten only when the value changes.

use std::collections::BTreeSet;

use federator_core::bundle::TrustBundle;
use federator_core::cert;
use federator_core::identity::{DEFAULT_TRUST_DOMAIN, TrustDomain};
use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

use super::problem::MeshProblem;

/// The mesh config field holding extra trust anchors.
pub const CA_CERTIFICATES: &str = "caCertificates";

/// The result of merging the bundle into a mesh config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshMerge {
    /// The new `mesh` YAML, when the mesh config must change.
    pub new_mesh: Option<String>,
    /// The annotation value the ConfigMap must carry (`None`: no annotation).
    pub annotation: Option<String>,
    /// Whether the annotation differs from the current one.
    pub annotation_changed: bool,
    /// The mesh config's `trustDomain` (`cluster.local` when unset).
    pub mesh_trust_domain: String,
    /// How many entries federator manages.
    pub managed_entries: usize,
}

impl MeshMerge {
    /// Whether the ConfigMap must be written.
    pub fn needs_write(&self) -> bool {
        self.new_mesh.is_some() || self.annotation_changed
    }
}

/// SHA-256 (hex) of an entry's `pem`, as recorded in the annotation.
pub fn pem_digest(pem: &str) -> String {
    hex::encode(Sha256::digest(pem.as_bytes()))
}

/// The entries federator wants: one per root of every other trust domain, in canonical order.
pub fn desired_entries(bundle: &TrustBundle, own: &TrustDomain) -> Vec<(String, String)> {
    bundle
        .trust_domains()
        .filter(|td| *td != own)
        .flat_map(|td| {
            bundle
                .roots_of(td)
                .into_iter()
                .map(move |der| (td.to_string(), cert::to_pem([der.as_slice()])))
        })
        .collect()
}

fn entry(trust_domain: &str, pem: &str) -> Value {
    let mut m = Mapping::new();
    m.insert(Value::from("pem"), Value::from(pem));
    m.insert(
        Value::from("trustDomains"),
        Value::Sequence(vec![Value::from(trust_domain)]),
    );
    Value::Mapping(m)
}

/// Merges the bundle into the mesh config `mesh_yaml` (`None` or empty: an empty mesh
/// config), given the current annotation.
pub fn merge(
    mesh_yaml: Option<&str>,
    annotation: Option<&str>,
    bundle: &TrustBundle,
    own: &TrustDomain,
) -> Result<MeshMerge, MeshProblem> {
    let original: Value = match mesh_yaml {
        Some(y) if !y.trim().is_empty() => serde_yaml::from_str(y).map_err(MeshProblem::Yaml)?,
        _ => Value::Mapping(Mapping::new()),
    };
    let mut mesh = match original.clone() {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => return Err(MeshProblem::NotAMapping),
    };
    let mesh_trust_domain = match mesh.get("trustDomain") {
        None | Some(Value::Null) => DEFAULT_TRUST_DOMAIN.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(MeshProblem::TrustDomain),
    };
    let existing: Vec<Value> = match mesh.get(CA_CERTIFICATES) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(s)) => s.clone(),
        Some(_) => return Err(MeshProblem::CaCertificates),
    };
    let managed: BTreeSet<&str> = annotation
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let is_managed = |v: &Value| {
        v.get("pem")
            .and_then(Value::as_str)
            .is_some_and(|pem| managed.contains(pem_digest(pem).as_str()))
    };
    let desired = desired_entries(bundle, own);
    let mut entries: Vec<Value> = existing
        .iter()
        .filter(|v| !is_managed(v))
        .cloned()
        .collect();
    entries.extend(desired.iter().map(|(td, pem)| entry(td, pem)));

    if entries != existing {
        if entries.is_empty() {
            mesh.remove(CA_CERTIFICATES);
        } else {
            mesh.insert(Value::from(CA_CERTIFICATES), Value::Sequence(entries));
        }
    }
    let new_value = Value::Mapping(mesh);
    let new_mesh = if new_value == original {
        None
    } else {
        Some(serde_yaml::to_string(&new_value).map_err(MeshProblem::Write)?)
    };
    let digests: BTreeSet<String> = desired.iter().map(|(_, pem)| pem_digest(pem)).collect();
    let new_annotation = if digests.is_empty() {
        None
    } else {
        Some(digests.into_iter().collect::<Vec<_>>().join(","))
    };
    Ok(MeshMerge {
        annotation_changed: new_annotation.as_deref() != annotation,
        annotation: new_annotation,
        new_mesh,
        mesh_trust_domain,
        managed_entries: desired.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::testutil::root_ca;

    fn bundle(entries: &[(&str, &str)]) -> TrustBundle {
        let tds: Vec<(TrustDomain, &str)> = entries
            .iter()
            .map(|(td, pem)| (TrustDomain::new(td).unwrap(), *pem))
            .collect();
        TrustBundle::from_domain_pems(tds.iter().map(|(t, p)| (t, *p))).unwrap()
    }

    const MESH: &str = "accessLogFile: /dev/stdout\ndefaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: \"true\"\ntrustDomain: east.local\ncaCertificates:\n- pem: unrelated\n  trustDomains: [other.example]\n- spiffeBundleUrl: https://example.com/bundle\n";

    #[test]
    fn adds_peer_entries_and_keeps_everything_else() {
        let own = TrustDomain::new("east.local").unwrap();
        let east = root_ca("east").cert_pem();
        let west = root_ca("west").cert_pem();
        let b = bundle(&[("east.local", &east), ("west.local", &west)]);
        let m = merge(Some(MESH), None, &b, &own).unwrap();
        assert!(m.needs_write());
        assert_eq!(m.mesh_trust_domain, "east.local");
        assert_eq!(m.managed_entries, 1);
        assert_eq!(m.annotation.as_deref(), Some(pem_digest(&west).as_str()));
        let new: Value = serde_yaml::from_str(m.new_mesh.as_deref().unwrap()).unwrap();
        let old: Value = serde_yaml::from_str(MESH).unwrap();
        assert_eq!(new["accessLogFile"], old["accessLogFile"]);
        assert_eq!(new["defaultConfig"], old["defaultConfig"]);
        let certs = new[CA_CERTIFICATES].as_sequence().unwrap();
        assert_eq!(certs.len(), 3);
        assert_eq!(certs[0], old[CA_CERTIFICATES][0]);
        assert_eq!(certs[1], old[CA_CERTIFICATES][1]);
        assert_eq!(certs[2]["pem"].as_str(), Some(west.as_str()));
        assert_eq!(certs[2]["trustDomains"][0].as_str(), Some("west.local"));

        // Applying it again changes nothing.
        let again = merge(m.new_mesh.as_deref(), m.annotation.as_deref(), &b, &own).unwrap();
        assert!(!again.needs_write(), "{again:?}");
    }

    #[test]
    fn replaces_and_removes_only_managed_entries() {
        let own = TrustDomain::new("east.local").unwrap();
        let east = root_ca("east").cert_pem();
        let west1 = root_ca("west1").cert_pem();
        let west2 = root_ca("west2").cert_pem();
        let first = merge(
            Some(MESH),
            None,
            &bundle(&[("east.local", &east), ("west.local", &west1)]),
            &own,
        )
        .unwrap();
        let mesh1 = first.new_mesh.unwrap();
        // The west root rotates: the old entry goes, the new one comes, the unrelated stay.
        let second = merge(
            Some(&mesh1),
            first.annotation.as_deref(),
            &bundle(&[("east.local", &east), ("west.local", &west2)]),
            &own,
        )
        .unwrap();
        let v: Value = serde_yaml::from_str(second.new_mesh.as_deref().unwrap()).unwrap();
        let certs = v[CA_CERTIFICATES].as_sequence().unwrap();
        assert_eq!(certs.len(), 3);
        assert_eq!(certs[0]["pem"].as_str(), Some("unrelated"));
        assert_eq!(certs[2]["pem"].as_str(), Some(west2.as_str()));
        // West leaves: only the unrelated entries stay, the annotation goes.
        let third = merge(
            second.new_mesh.as_deref(),
            second.annotation.as_deref(),
            &bundle(&[("east.local", &east)]),
            &own,
        )
        .unwrap();
        assert_eq!(third.annotation, None);
        assert!(third.annotation_changed);
        let v: Value = serde_yaml::from_str(third.new_mesh.as_deref().unwrap()).unwrap();
        assert_eq!(
            v[CA_CERTIFICATES],
            serde_yaml::from_str::<Value>(MESH).unwrap()[CA_CERTIFICATES]
        );
    }

    #[test]
    fn one_entry_per_root_in_canonical_order() {
        let own = TrustDomain::new("a.local").unwrap();
        let a = root_ca("a").cert_pem();
        let b1 = root_ca("b1").cert_pem();
        let b2 = root_ca("b2").cert_pem();
        let c = root_ca("c").cert_pem();
        let both = format!("{b1}{b2}");
        let bd = bundle(&[("c.local", &c), ("a.local", &a), ("b.local", &both)]);
        let entries = desired_entries(&bd, &own);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].0, "b.local");
        assert_eq!(entries[1].0, "b.local");
        assert_eq!(entries[2].0, "c.local");
        let m = merge(None, None, &bd, &own).unwrap();
        assert_eq!(m.mesh_trust_domain, "cluster.local");
        assert_eq!(m.annotation.as_deref().unwrap().split(',').count(), 3);
        // Same bundle, other input order: same result.
        let bd2 = bundle(&[
            ("b.local", &format!("{b2}{b1}")),
            ("a.local", &a),
            ("c.local", &c),
        ]);
        assert_eq!(merge(None, None, &bd2, &own).unwrap(), m);
    }

    #[test]
    fn nothing_to_do_for_a_single_trust_domain() {
        let own = TrustDomain::new("east.local").unwrap();
        let east = root_ca("east").cert_pem();
        let m = merge(Some(MESH), None, &bundle(&[("east.local", &east)]), &own).unwrap();
        assert!(!m.needs_write(), "{m:?}");
        let m = merge(Some("{}"), None, &bundle(&[("east.local", &east)]), &own).unwrap();
        assert!(!m.needs_write(), "{m:?}");
    }

    #[test]
    fn refuses_what_it_cannot_merge() {
        let own = TrustDomain::new("east.local").unwrap();
        let b = TrustBundle::new();
        assert!(merge(Some("a: [b"), None, &b, &own).is_err());
        assert!(merge(Some("- a\n- b\n"), None, &b, &own).is_err());
        assert!(merge(Some("caCertificates: 3\n"), None, &b, &own).is_err());
    }
}
