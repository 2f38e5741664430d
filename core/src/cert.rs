//! PEM parsing and a readable summary of certificates.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::key::KeyKind;
use crate::{Error, Result};

/// Splits PEM text into blocks, refusing garbage and truncated input. `source_name` is used
/// in error messages.
pub fn parse_pem_blocks(text: &[u8], source_name: &str) -> Result<Vec<pem::Pem>> {
    let bad = |why: String| Error::Pem {
        source_name: source_name.to_owned(),
        reason: why,
    };
    let s = std::str::from_utf8(text).map_err(|_| {
        bad("not PEM text (binary data; is it DER? convert with openssl x509 -inform der)".into())
    })?;
    let begins = s.matches("-----BEGIN ").count();
    if begins == 0 {
        return Err(bad(
            "no PEM block found (expected -----BEGIN ...-----)".into()
        ));
    }
    let ends = s.matches("-----END ").count();
    let blocks = pem::parse_many(s).map_err(|e| bad(format!("malformed PEM ({e})")))?;
    if ends < begins || blocks.len() < begins {
        return Err(bad(format!(
            "truncated or malformed PEM: {begins} BEGIN line(s) but only {} complete block(s)",
            blocks.len().min(ends)
        )));
    }
    Ok(blocks)
}

/// Parses every `CERTIFICATE` block of PEM text into DER, checking that each one is a
/// well-formed X.509 certificate. Any other block type is an error.
pub fn parse_pem_certificates(text: &[u8], source_name: &str) -> Result<Vec<Vec<u8>>> {
    let blocks = parse_pem_blocks(text, source_name)?;
    let mut out = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.into_iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(Error::Pem {
                source_name: source_name.to_owned(),
                reason: format!(
                    "block {} is a {:?}, expected CERTIFICATE",
                    i + 1,
                    block.tag()
                ),
            });
        }
        let der = block.into_contents();
        parse_der(&der).map_err(|e| Error::Pem {
            source_name: source_name.to_owned(),
            reason: format!("certificate {} is not valid X.509 ({e})", i + 1),
        })?;
        out.push(der);
    }
    Ok(out)
}

/// Parses one DER certificate, refusing trailing bytes.
pub fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::Certificate(format!("not a valid X.509 certificate ({e})")))?;
    if !rest.is_empty() {
        return Err(Error::Certificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

/// A DER TLV with a definite length (short or long form), for the few structures federator
/// encodes by hand (the URI name constraint; malformed inputs for the fuzz targets).
pub(crate) fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8); // < 0x80: fits the short form
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8); // at most 8 bytes for a usize
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes DER certificates as canonical PEM: `\n` line endings, 64-column base64, no
/// headers, a trailing newline. The same input always gives the same bytes.
pub fn to_pem<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    let cfg = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    ders.into_iter()
        .map(|d| pem::encode_config(&pem::Pem::new("CERTIFICATE", d.to_vec()), cfg))
        .collect()
}

/// The SHA-256 fingerprint of a DER certificate, lowercase hex without separators.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A certificate's NotBefore and NotAfter.
pub fn validity(cert: &X509Certificate<'_>) -> (OffsetDateTime, OffsetDateTime) {
    let v = cert.validity();
    (v.not_before.to_datetime(), v.not_after.to_datetime())
}

/// The URI SANs of a certificate.
pub fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    sans(cert)
        .into_iter()
        .filter_map(|n| match n {
            San::Uri(u) => Some(u),
            _ => None,
        })
        .collect()
}

enum San {
    Uri(String),
    Dns(String),
    Other,
}

fn sans(cert: &X509Certificate<'_>) -> Vec<San> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => San::Uri((*u).to_owned()),
            GeneralName::DNSName(d) => San::Dns((*d).to_owned()),
            _ => San::Other,
        })
        .collect()
}

/// A readable summary of one certificate, as `federator ca inspect` prints it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN (RFC 4514).
    pub subject: String,
    /// Issuer DN (RFC 4514).
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// NotBefore, RFC 3339.
    pub not_before: String,
    /// NotAfter, RFC 3339.
    pub not_after: String,
    /// Public key, e.g. "ECDSA P-256" or "RSA 4096".
    pub key: String,
    /// Signature algorithm.
    pub signature_algorithm: String,
    /// BasicConstraints CA flag.
    pub is_ca: bool,
    /// BasicConstraints path length, when set.
    pub path_len: Option<u32>,
    /// Key usages set.
    pub key_usage: Vec<String>,
    /// Extended key usages, when the extension is present.
    pub extended_key_usage: Option<Vec<String>>,
    /// URI SANs.
    pub uri_sans: Vec<String>,
    /// DNS SANs.
    pub dns_sans: Vec<String>,
    /// The SPIFFE trust domain recorded in a CA certificate's URI SAN (`spiffe://<td>`).
    pub trust_domain: Option<String>,
    /// The trust domain a CA is bound to by federator's URI name constraint
    /// ([`crate::name_constraint`]), or what is wrong with its name constraints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_constraint: Option<String>,
    /// SHA-256 fingerprint of the DER.
    pub sha256: String,
    /// Subject key identifier, hex.
    pub subject_key_id: Option<String>,
    /// Authority key identifier, hex.
    pub authority_key_id: Option<String>,
    /// Whether subject equals issuer.
    pub self_issued: bool,
}

impl CertInfo {
    /// Summarises a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let cert = parse_der(der)?;
        let (nb, na) = validity(&cert);
        let bc = cert
            .basic_constraints()
            .ok()
            .flatten()
            .map(|b| b.value.clone());
        let key_usage = cert
            .key_usage()
            .ok()
            .flatten()
            .map(|ku| key_usage_names(ku.value))
            .unwrap_or_default();
        let extended_key_usage = cert.extended_key_usage().ok().flatten().map(|eku| {
            let e = eku.value;
            let mut v = Vec::new();
            if e.any {
                v.push("any".to_owned());
            }
            if e.server_auth {
                v.push("serverAuth".to_owned());
            }
            if e.client_auth {
                v.push("clientAuth".to_owned());
            }
            if e.code_signing {
                v.push("codeSigning".to_owned());
            }
            if e.email_protection {
                v.push("emailProtection".to_owned());
            }
            if e.time_stamping {
                v.push("timeStamping".to_owned());
            }
            if e.ocsp_signing {
                v.push("OCSPSigning".to_owned());
            }
            v.extend(e.other.iter().map(|o| o.to_id_string()));
            v
        });
        let (mut uri_sans, mut dns_sans) = (Vec::new(), Vec::new());
        for san in sans(&cert) {
            match san {
                San::Uri(u) => uri_sans.push(u),
                San::Dns(d) => dns_sans.push(d),
                San::Other => {}
            }
        }
        let is_ca = bc.as_ref().is_some_and(|b| b.ca);
        let trust_domain = if is_ca {
            trust_domain_of_ca(&uri_sans)
        } else {
            None
        };
        let mut ski = None;
        let mut aki = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(hex::encode(k.0)),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a.key_identifier.as_ref().map(|k| hex::encode(k.0))
                }
                _ => {}
            }
        }
        let name_constraint = match crate::name_constraint::read(&cert) {
            Ok(crate::name_constraint::Constraint::None) => None,
            Ok(crate::name_constraint::Constraint::TrustDomain(td)) => Some(td),
            Err(e) => Some(e.to_string()),
        };
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: rfc3339(nb),
            not_after: rfc3339(na),
            key: match KeyKind::from_spki(cert.public_key()) {
                Ok(k) => k.to_string(),
                Err(desc) => desc,
            },
            signature_algorithm: signature_algorithm_name(&cert),
            is_ca,
            path_len: bc.and_then(|b| b.path_len_constraint),
            key_usage,
            extended_key_usage,
            uri_sans,
            dns_sans,
            trust_domain,
            name_constraint,
            sha256: fingerprint(der),
            subject_key_id: ski,
            authority_key_id: aki,
            self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
        })
    }
}

/// The trust domain a CA certificate records: its single `spiffe://<td>` URI SAN without path.
fn trust_domain_of_ca(uri_sans: &[String]) -> Option<String> {
    uri_sans.iter().find_map(|u| {
        crate::identity::SpiffeId::parse(u)
            .ok()
            .filter(|id| id.path().is_empty())
            .map(|id| id.trust_domain().to_string())
    })
}

pub(crate) fn key_usage_names(ku: &x509_parser::extensions::KeyUsage) -> Vec<String> {
    let names = [
        (ku.digital_signature(), "digitalSignature"),
        (ku.non_repudiation(), "nonRepudiation"),
        (ku.key_encipherment(), "keyEncipherment"),
        (ku.data_encipherment(), "dataEncipherment"),
        (ku.key_agreement(), "keyAgreement"),
        (ku.key_cert_sign(), "keyCertSign"),
        (ku.crl_sign(), "cRLSign"),
        (ku.encipher_only(), "encipherOnly"),
        (ku.decipher_only(), "decipherOnly"),
    ];
    names
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, n)| (*n).to_owned())
        .collect()
}

/// A readable name for a certificate's signature algorithm.
pub fn signature_algorithm_name(cert: &X509Certificate<'_>) -> String {
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256".into(),
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384".into(),
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512".into(),
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption".into(),
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption".into(),
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption".into(),
        "1.2.840.113549.1.1.10" => "rsassa-pss".into(),
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => "sha1WithRSAEncryption".into(),
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1".into(),
        "1.3.101.112" => "ed25519".into(),
        _ => oid,
    }
}

/// Whether a certificate is signed with SHA-1, which Go (and so istiod) refuses.
pub fn is_sha1_signed(cert: &X509Certificate<'_>) -> bool {
    matches!(
        cert.signature_algorithm.algorithm.to_id_string().as_str(),
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" | "1.2.840.10045.4.1" | "1.2.840.10040.4.3"
    )
}

/// RFC 3339 text for a time (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_garbage_and_truncation() {
        let err = parse_pem_blocks(b"not pem at all", "x.pem")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "x.pem: no PEM block found (expected -----BEGIN ...-----)"
        );
        let err = parse_pem_blocks(b"\xff\xfe", "x.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not PEM text"), "{err}");
        let err = parse_pem_blocks(b"-----BEGIN CERTIFICATE-----\nAAAA\n", "x.pem")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("truncated") || err.contains("malformed"),
            "{err}"
        );
        let err = parse_pem_certificates(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "x.pem",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("certificate 1 is not valid X.509"), "{err}");
        let err = parse_pem_certificates(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "x.pem",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expected CERTIFICATE"), "{err}");
    }
}
