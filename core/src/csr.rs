//! Certificate signing requests for cluster CAs.
//!
//! The cluster side ([`generate_cluster_csr`]) creates the key and a CSR that carries only the
//! public key, a subject naming the cluster and the trust domain's SPIFFE ID. The hub side
//! ([`CsrInfo::parse`]) verifies the CSR's signature, classifies its key and lists everything
//! it asks for, so that the [`policy`](crate::policy) can refuse what it does not grant.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose, SanType};
use serde::Serialize;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::identity::{ClusterName, TrustDomain};
use crate::key::{KeyAlgorithm, KeyKind, PrivateKey};
use crate::{Error, Result};

/// The common name federator gives a cluster's CA.
pub fn cluster_ca_common_name(cluster: &ClusterName) -> String {
    format!("{cluster} intermediate CA")
}

/// The extensions of a cluster CA, as the cluster asks for them and the policy grants them:
/// the trust domain's SPIFFE ID as the only URI SAN, CA with path length 0, and the key usages
/// digitalSignature, keyCertSign and cRLSign. The subject is the caller's.
pub(crate) fn cluster_ca_profile(
    params: &mut CertificateParams,
    trust_domain: &TrustDomain,
) -> Result<()> {
    let uri = trust_domain.spiffe_uri().try_into().map_err(|e| {
        Error::Invalid(format!(
            "trust domain {trust_domain} cannot be a URI SAN ({e})"
        ))
    })?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    Ok(())
}

/// Creates a fresh key and a CSR for a cluster CA. The key never leaves the caller.
pub fn generate_cluster_csr(
    cluster: &ClusterName,
    trust_domain: &TrustDomain,
    algorithm: KeyAlgorithm,
) -> Result<(PrivateKey, String)> {
    let key = PrivateKey::generate(algorithm)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, cluster_ca_common_name(cluster));
    cluster_ca_profile(&mut params, trust_domain)?;
    let csr = params.serialize_request(key.pair())?.pem()?;
    Ok((key, csr))
}

/// The largest CSR the hub reads (PEM or DER). A member writes it, so it is bounded before
/// anything parses it; a cluster CA CSR is under 2 KiB even with an RSA 4096 key.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// What a CSR contains, after its signature was verified.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CsrInfo {
    /// The DER of the whole CSR.
    #[serde(skip)]
    pub der: Vec<u8>,
    /// The SubjectPublicKeyInfo (DER).
    #[serde(skip)]
    pub public_key_info: Vec<u8>,
    /// The key's kind (already checked: supported and strong enough).
    pub key: KeyKind,
    /// The subject, RFC 4514. Informational: the policy sets its own subject.
    pub subject: String,
    /// Requested URI SANs.
    pub uri_sans: Vec<String>,
    /// Requested DNS SANs.
    pub dns_sans: Vec<String>,
    /// Requested SANs of other types, described.
    pub other_sans: Vec<String>,
    /// Requested BasicConstraints: (CA flag, path length).
    pub basic_constraints: Option<(bool, Option<u32>)>,
    /// Requested key usages.
    pub key_usage: Vec<String>,
    /// Requested extended key usages (any at all is refused by the policy).
    pub extended_key_usage: Option<Vec<String>>,
    /// Requested extensions the policy never grants, by OID or name.
    pub other_extensions: Vec<String>,
}

impl CsrInfo {
    /// SHA-256 of the CSR's DER, lowercase hex: how hub and agent name a CSR.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&self.der))
    }

    /// Parses a PEM (`CERTIFICATE REQUEST`) or DER CSR, verifies its self-signature and
    /// classifies its key. Refuses input over [`MAX_CSR_BYTES`], a bad signature, an
    /// unsupported algorithm and weak keys.
    pub fn parse(input: &[u8]) -> Result<Self> {
        if input.len() > MAX_CSR_BYTES {
            return Err(Error::CsrRefused(format!(
                "it is {} bytes long; a cluster CA CSR is at most {MAX_CSR_BYTES} bytes",
                input.len()
            )));
        }
        let der = if input.starts_with(b"-----") || input.iter().take(64).all(u8::is_ascii) {
            let blocks = crate::cert::parse_pem_blocks(input, "CSR")?;
            let mut csrs = blocks.into_iter().filter(|b| {
                b.tag() == "CERTIFICATE REQUEST" || b.tag() == "NEW CERTIFICATE REQUEST"
            });
            let block = csrs.next().ok_or_else(|| {
                Error::CsrRefused("no CERTIFICATE REQUEST PEM block found".into())
            })?;
            if csrs.next().is_some() {
                return Err(Error::CsrRefused(
                    "more than one CSR given; give exactly one".into(),
                ));
            }
            block.into_contents()
        } else {
            input.to_vec()
        };
        let (rest, req) = X509CertificationRequest::from_der(&der)
            .map_err(|e| Error::CsrRefused(format!("it is not a valid PKCS#10 CSR ({e})")))?;
        if !rest.is_empty() {
            return Err(Error::CsrRefused("trailing bytes after the CSR".into()));
        }
        let info = &req.certification_request_info;
        let key = KeyKind::from_spki(&info.subject_pki)
            .map_err(|d| Error::CsrRefused(format!("its key is not accepted: {d}")))?;
        req.verify_signature().map_err(|e| {
            Error::CsrRefused(format!(
                "its signature does not verify ({e}); the CSR was altered or signed with another key"
            ))
        })?;
        let mut out = CsrInfo {
            der: der.clone(),
            public_key_info: info.subject_pki.raw.to_vec(),
            key,
            subject: info.subject.to_string(),
            uri_sans: Vec::new(),
            dns_sans: Vec::new(),
            other_sans: Vec::new(),
            basic_constraints: None,
            key_usage: Vec::new(),
            extended_key_usage: None,
            other_extensions: Vec::new(),
        };
        for ext in req.requested_extensions().into_iter().flatten() {
            match ext {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(u) => out.uri_sans.push((*u).to_owned()),
                            GeneralName::DNSName(d) => out.dns_sans.push((*d).to_owned()),
                            other => out.other_sans.push(other.to_string()),
                        }
                    }
                }
                ParsedExtension::BasicConstraints(bc) => {
                    out.basic_constraints = Some((bc.ca, bc.path_len_constraint))
                }
                ParsedExtension::KeyUsage(ku) => {
                    out.key_usage = crate::cert::key_usage_names(ku);
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    let mut v: Vec<String> = Vec::new();
                    if eku.any {
                        v.push("any".into());
                    }
                    if eku.server_auth {
                        v.push("serverAuth".into());
                    }
                    if eku.client_auth {
                        v.push("clientAuth".into());
                    }
                    v.extend(eku.other.iter().map(|o| o.to_id_string()));
                    if v.is_empty() {
                        v.push("(other)".into());
                    }
                    out.extended_key_usage = Some(v);
                }
                // A requested key identifier is harmless: the policy computes its own.
                ParsedExtension::SubjectKeyIdentifier(_) => {}
                ParsedExtension::NameConstraints(_) => {
                    out.other_extensions.push("name constraints".into())
                }
                ParsedExtension::UnsupportedExtension { oid } => {
                    out.other_extensions.push(oid.to_id_string())
                }
                ParsedExtension::ParseError { error } => {
                    return Err(Error::CsrRefused(format!(
                        "it requests a malformed extension ({error})"
                    )));
                }
                other => out.other_extensions.push(
                    format!("{other:?}")
                        .split(['(', ' ', '{'])
                        .next()
                        .unwrap_or("unknown")
                        .to_owned(),
                ),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_oversized_csrs_before_parsing() {
        let cluster = ClusterName::new("c1").unwrap();
        let td = TrustDomain::new("a.local").unwrap();
        let (_, pem) = generate_cluster_csr(&cluster, &td, KeyAlgorithm::EcdsaP256).unwrap();
        assert!(CsrInfo::parse(pem.as_bytes()).is_ok());
        // The same CSR behind 64 KiB of other text.
        let padded = format!("{}\n{pem}", "x".repeat(MAX_CSR_BYTES));
        let err = CsrInfo::parse(padded.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("a cluster CA CSR is at most 65536 bytes"),
            "{err}"
        );
    }
}
