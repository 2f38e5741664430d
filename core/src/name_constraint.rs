//! The opt-in URI name constraint that binds a cluster CA to its own trust domain.
//!
//! Without it, a cluster CA may sign a leaf for any SPIFFE ID, and because every member's
//! `root-cert.pem` holds every trust domain's root, a compromised member of trust domain B can
//! mint `spiffe://A/...` identities that A's workloads accept (docs/security.md, "Trust-domain
//! isolation"). With it, the cluster CA carries a critical NameConstraints extension
//! (RFC 5280 §4.2.1.10) for the URI name form:
//!
//! | subtree | base | meaning |
//! |---|---|---|
//! | permitted | `URI:<trust domain>` | a URI below this CA must have this host |
//! | excluded | `URI:.<trust domain>` | and not a subdomain of it (Go's `crypto/x509` reads a constraint without a leading dot as "this host and its subdomains"; OpenSSL and BoringSSL as "exactly this host") |
//!
//! so that OpenSSL, BoringSSL (Envoy) and Go's `crypto/x509` reject a leaf of another trust
//! domain, and of a subdomain of this one, while every name istiod issues
//! (`spiffe://<trust domain>/ns/…/sa/…`, and DNS names, which the constraint does not touch)
//! passes. rustls-webpki (rustls, ztunnel) rejects every certificate below a URI name
//! constraint ("We currently don't support URI constraints -- fail closed for now", its
//! `subject_name/mod.rs`), which is why the constraint is opt-in and sidecar meshes only.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::cert::der_tlv;
use crate::identity::{SpiffeId, TrustDomain};
use crate::{Error, Result};

/// The NameConstraints extension's OID (2.5.29.30), as rcgen takes it.
const OID: [u64; 4] = [2, 5, 29, 30];

/// The DER value of the extension for `trust_domain`.
fn value(trust_domain: &TrustDomain) -> Vec<u8> {
    // GeneralSubtrees ::= SEQUENCE OF GeneralSubtree; GeneralSubtree ::= SEQUENCE { base
    // GeneralName }; uniformResourceIdentifier is [6] IMPLICIT IA5String (0x86).
    let subtree = |host: &str| der_tlv(0x30, &der_tlv(0x86, host.as_bytes()));
    let permitted = der_tlv(0xA0, &subtree(trust_domain.as_str()));
    let excluded = der_tlv(0xA1, &subtree(&format!(".{trust_domain}")));
    der_tlv(0x30, &[permitted, excluded].concat())
}

/// The critical extension that binds a CA to `trust_domain`.
pub fn extension(trust_domain: &TrustDomain) -> rcgen::CustomExtension {
    let mut ext = rcgen::CustomExtension::from_oid_content(&OID, value(trust_domain));
    ext.set_criticality(true);
    ext
}

/// What a certificate's NameConstraints extension says, as federator reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// The certificate has no NameConstraints extension.
    None,
    /// Exactly the constraint [`extension`] writes, for this trust domain.
    TrustDomain(String),
}

/// Reads a certificate's NameConstraints: none, or exactly the one federator writes for one
/// trust domain (critical, the two URI subtrees of the module documentation). Anything else
/// (other name forms, other subtrees, not critical) is an error saying what it holds.
pub fn read(cert: &X509Certificate<'_>) -> Result<Constraint> {
    let bad = |why: String| Err(Error::Certificate(format!("name constraints: {why}")));
    let Some(ext) = cert
        .extensions()
        .iter()
        .find(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_NAME_CONSTRAINTS)
    else {
        return Ok(Constraint::None);
    };
    let ParsedExtension::NameConstraints(nc) = ext.parsed_extension() else {
        return bad("the extension is malformed".into());
    };
    let uris = |subtrees: &Option<Vec<x509_parser::extensions::GeneralSubtree<'_>>>| {
        subtrees
            .iter()
            .flatten()
            .map(|s| match s.base {
                GeneralName::URI(u) => Ok(u.to_owned()),
                ref other => Err(format!("{other:?}")),
            })
            .collect::<std::result::Result<Vec<String>, String>>()
    };
    let (permitted, excluded) = match (uris(&nc.permitted_subtrees), uris(&nc.excluded_subtrees)) {
        (Ok(p), Ok(e)) => (p, e),
        (Err(other), _) | (_, Err(other)) => {
            return bad(format!(
                "it constrains the name {other}; federator only writes URI constraints"
            ));
        }
    };
    let [host] = permitted.as_slice() else {
        return bad(format!(
            "it permits the URI hosts {permitted:?}; federator permits exactly one trust domain"
        ));
    };
    if excluded != [format!(".{host}")] {
        return bad(format!(
            "it excludes the URI hosts {excluded:?}; federator excludes exactly the subdomains of {host}"
        ));
    }
    if !ext.critical {
        return bad("the extension is not critical".into());
    }
    Ok(Constraint::TrustDomain(host.clone()))
}

/// The name constraint of the first certificate of a PEM chain (a cluster CA's
/// `cert-chain.pem`, or `spec.signed.chainPem`).
pub fn of_chain(chain_pem: &str) -> Result<Constraint> {
    let ders = crate::cert::parse_pem_certificates(chain_pem.as_bytes(), "chain")?;
    let first = ders
        .first()
        .ok_or_else(|| Error::Certificate("the chain holds no certificate".into()))?;
    read(&crate::cert::parse_der(first)?)
}

/// Whether a leaf with SPIFFE ID `id` may be issued below a CA with `constraint`, as OpenSSL,
/// BoringSSL and Go decide it for the constraint [`extension`] writes: the ID's trust domain
/// is the constraint's host, compared without regard to case.
pub fn permits(constraint: &Constraint, id: &SpiffeId) -> bool {
    match constraint {
        Constraint::None => true,
        Constraint::TrustDomain(host) => id.trust_domain().as_str().eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_two_subtrees() {
        let td = TrustDomain::new("a.example").unwrap();
        let v = value(&td);
        // SEQUENCE { [0] { SEQUENCE { [6] "a.example" } } [1] { SEQUENCE { [6] ".a.example" } } }
        let mut expected = vec![0x30, 31, 0xA0, 13, 0x30, 11, 0x86, 9];
        expected.extend(b"a.example");
        expected.extend([0xA1, 14, 0x30, 12, 0x86, 10]);
        expected.extend(b".a.example");
        assert_eq!(v, expected);
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        let content = vec![7u8; 300];
        let out = der_tlv(0x04, &content);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2C]);
        assert_eq!(out.len(), 304);
        assert_eq!(der_tlv(0x04, &[1; 0x7F])[1], 0x7F);
        assert_eq!(&der_tlv(0x04, &[1; 0x80])[1..3], &[0x81, 0x80]);
    }

    #[test]
    fn permits_only_the_own_trust_domain() {
        let c = Constraint::TrustDomain("b.example".into());
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        assert!(permits(&c, &id("spiffe://b.example/ns/x/sa/y")));
        assert!(!permits(&c, &id("spiffe://a.example/ns/x/sa/y")));
        assert!(!permits(&c, &id("spiffe://east.b.example/ns/x/sa/y")));
        assert!(permits(
            &Constraint::None,
            &id("spiffe://a.example/ns/x/sa/y")
        ));
    }
}
