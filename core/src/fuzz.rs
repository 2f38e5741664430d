//! Entry points for fuzzing: one function per parser of untrusted input, taking arbitrary
//! bytes and running the parser the way federator runs it.
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` are one-line calls into these functions, and
//! the corpus replay test (`tests/tests/fuzz_corpus.rs`) calls the same functions on every
//! committed corpus and regression file, on the stable toolchain. So whatever a fuzzer found
//! stays fixed in CI. See `docs/fuzzing.md`.
//!
//! Every entry returns an [`Outcome`]: `Ok` with a short summary when the input was accepted,
//! `Err` with the error a user would see. Beyond "never panics, never hangs", each entry checks
//! the invariants of what it accepted and **panics when one is broken** (that is how a fuzzer
//! reports it): canonical PEM parses back to the same certificates, a duration formats back to
//! itself, and above all a CA the hub signs has exactly the fields of the signing policy,
//! whatever the CSR asked for.
//!
//! PEM inputs may also be given as DER, which the entry turns into PEM before parsing: random
//! changes to base64 text mostly just break it, so this lets the fuzzer mutate the DER
//! structures themselves while every input still goes through the PEM parser. Multi-part
//! inputs (`cacerts`, `ca_import`, `trust_bundle`) are split on the line [`SEPARATOR`].
//!
//! The SPIFFE bundle *writer* ([`TrustBundle::spiffe_bundle`]) is fuzzed by [`trust_bundle`],
//! the *reader* ([`crate::spiffe::parse_bundle`], what a foreign bundle endpoint serves) by
//! [`spiffe_bundle`].

use std::collections::BTreeMap;
use std::sync::OnceLock;

use time::OffsetDateTime;

use crate::bundle::TrustBundle;
use crate::ca::{IssuingCa, RootOptions};
use crate::cert::{self, CertInfo, der_tlv};
use crate::csr::{CsrInfo, cluster_ca_common_name};
use crate::identity::{ClusterName, TrustDomain};
use crate::key::PrivateKey;
use crate::policy::{ClusterCaRequest, SigningPolicy};
use crate::{cacerts, duration as dur};

/// What an entry made of its input: a summary when accepted, the user-facing error when not.
pub type Outcome = std::result::Result<String, String>;

/// The fixed "now" of every time-dependent entry, so that a corpus file gives the same result
/// on every run, today and in years. Seed material is generated valid at this instant.
pub fn now() -> OffsetDateTime {
    // 2026-01-01T00:00:00Z
    OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The cluster the [`csr_policy`] entry signs for.
pub const CLUSTER: &str = "fuzz-1";
/// The trust domain the [`csr_policy`] entry signs for.
pub const TRUST_DOMAIN: &str = "fuzz.local";

fn text(data: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(data).map_err(|_| "not UTF-8".to_owned())
}

/// What separates the parts of a multi-part input.
pub const SEPARATOR: &[u8] = b"\n--8<--\n";

fn parts(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..i]);
        rest = &rest[i + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// Joins parts into a multi-part input (for writing seeds).
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEPARATOR)
}

/// Splits concatenated DER values at their top-level lengths; what does not parse as a
/// DER header with a length that fits is taken whole.
fn split_der(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = match data.get(1) {
            Some(&l) if l < 0x80 => Some(2 + l as usize),
            Some(&l) if (0x81..=0x84).contains(&l) => {
                let n = (l & 0x7f) as usize;
                data.get(2..2 + n)
                    .map(|b| 2 + n + b.iter().fold(0usize, |acc, x| (acc << 8) | *x as usize))
            }
            _ => None,
        };
        let take = len.filter(|l| *l <= data.len()).unwrap_or(data.len());
        out.push(&data[..take]);
        data = &data[take..];
    }
    out
}

/// PEM text as is; anything else is taken as DER values and encoded as PEM blocks of `tag`.
fn pem_or_der(data: &[u8], tag: &str) -> Vec<u8> {
    if data.is_empty() || data.trim_ascii_start().starts_with(b"-----") {
        return data.to_vec();
    }
    let cfg = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    split_der(data)
        .into_iter()
        .map(|der| pem::encode_config(&pem::Pem::new(tag, der.to_vec()), cfg))
        .collect::<String>()
        .into_bytes()
}

/// The PEM block types of private keys, for DER key input: its first byte selects one.
pub const KEY_TAGS: [&str; 3] = ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];

/// A private key as PEM, or DER after a byte selecting its [`KEY_TAGS`] entry.
fn key_pem_or_der(data: &[u8]) -> Vec<u8> {
    match data.split_first() {
        Some((sel, der)) if !data.trim_ascii_start().starts_with(b"-----") => {
            pem_or_der(der, KEY_TAGS[*sel as usize % KEY_TAGS.len()])
        }
        _ => data.to_vec(),
    }
}

/// Go-style durations (`--ttl`, `spec.clusterCaTtl`): [`dur::parse`]. Accepted durations
/// format back to themselves.
pub fn duration(data: &[u8]) -> Outcome {
    let d = dur::parse(text(data)?).map_err(|e| e.to_string())?;
    let formatted = dur::format(d);
    let again = dur::parse(&formatted)
        .unwrap_or_else(|e| panic!("format({d:?}) = {formatted:?} does not parse back: {e}"));
    assert_eq!(again, d, "format/parse round trip of {formatted:?}");
    Ok(formatted)
}

/// Certificates as federator loads them from files and objects:
/// [`cert::parse_pem_certificates`], then [`CertInfo::from_der`] of each (what `ca inspect`
/// prints). Accepted PEM re-encodes canonically and parses back to the same certificates.
pub fn certificate(data: &[u8]) -> Outcome {
    let ders = cert::parse_pem_certificates(&pem_or_der(data, "CERTIFICATE"), "input")
        .map_err(|e| e.to_string())?;
    let mut summary = Vec::new();
    for der in &ders {
        match CertInfo::from_der(der) {
            Ok(info) => summary.push(info.subject),
            Err(e) => summary.push(format!("(unreadable: {e})")),
        }
    }
    let canonical = cert::to_pem(ders.iter().map(Vec::as_slice));
    let again = cert::parse_pem_certificates(canonical.as_bytes(), "canonical")
        .unwrap_or_else(|e| panic!("canonical PEM does not parse back: {e}"));
    assert_eq!(again, ders, "canonical PEM round trip");
    Ok(summary.join("; "))
}

/// Private keys (`init --import`, `ca import`, `ca-key.pem`, the agent's pending key):
/// [`PrivateKey::from_pem`]. An accepted key re-exports as PKCS#8 that imports back to the
/// same key.
pub fn private_key(data: &[u8]) -> Outcome {
    let key = PrivateKey::from_pem(&key_pem_or_der(data), "input").map_err(|e| e.to_string())?;
    let again = PrivateKey::from_pem(key.to_pkcs8_pem().as_bytes(), "re-exported")
        .unwrap_or_else(|e| panic!("a re-exported {} key does not import: {e}", key.kind()));
    assert_eq!(again.kind(), key.kind());
    assert_eq!(again.public_key_raw(), key.public_key_raw());
    Ok(key.kind().to_string())
}

/// An existing CA to sign with (`init --import`, `ca import`): [`IssuingCa::import`] of
/// `certificate chain PEM`, [`SEPARATOR`], `key PEM`, at [`now`].
pub fn ca_import(data: &[u8]) -> Outcome {
    let p = parts(data);
    let cert_pem = pem_or_der(p[0], "CERTIFICATE");
    let key_pem = key_pem_or_der(p.get(1).copied().unwrap_or_default());
    let ca = IssuingCa::import(&cert_pem, &key_pem, now()).map_err(|e| e.to_string())?;
    Ok(ca.info().map(|i| i.subject).unwrap_or_default())
}

fn request() -> ClusterCaRequest {
    ClusterCaRequest {
        // Both names are valid constants.
        cluster: ClusterName::new(CLUSTER).unwrap_or_else(|e| unreachable!("{e}")),
        trust_domain: TrustDomain::new(TRUST_DOMAIN).unwrap_or_else(|e| unreachable!("{e}")),
    }
}

/// A CSR exactly as the hub receives it from a member's `ClusterTrust` status (PEM or DER):
/// [`CsrInfo::parse`], then the signing policy's check for [`CLUSTER`] in [`TRUST_DOMAIN`].
/// Mutated CSRs mostly fail their signature check, so [`csr_policy`] explores what lies
/// behind it.
pub fn csr(data: &[u8]) -> Outcome {
    let info = CsrInfo::parse(data).map_err(|e| e.to_string())?;
    SigningPolicy::default()
        .check(&info, &request())
        .map_err(|e| e.to_string())?;
    Ok(info.subject)
}

/// The fixed P-256 key that signs the CSRs of [`csr_policy`], as PKCS#8 DER. It is a fuzzing
/// fixture, not a secret: its scalar is the constant 7…7.
pub fn csr_policy_key_pkcs8() -> Vec<u8> {
    use p256::pkcs8::EncodePrivateKey;
    p256::SecretKey::from_slice(&[7u8; 32])
        .and_then(|k| k.to_pkcs8_der().map_err(|_| p256::elliptic_curve::Error))
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default()
}

/// The CertificationRequestInfo (the signed part) of a CSR in DER, for seeding [`csr_policy`].
pub fn csr_request_info(csr_der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;
    X509CertificationRequest::from_der(csr_der)
        .ok()
        .map(|(_, req)| req.certification_request_info.raw.to_vec())
}

fn policy_ca() -> &'static IssuingCa {
    static CA: OnceLock<IssuingCa> = OnceLock::new();
    CA.get_or_init(|| {
        IssuingCa::create_root(&RootOptions::default(), now())
            .unwrap_or_else(|e| panic!("cannot create the fuzzing root: {e}"))
    })
}

/// The signing policy behind a valid CSR signature: the input is a CertificationRequestInfo
/// (DER), which this entry signs with [`csr_policy_key_pkcs8`] into a CSR, so whatever the
/// fuzzer puts into subject, attributes and extensions carries a valid signature as long as the
/// public key stays the fixed one. The CSR then goes through [`CsrInfo::parse`] and
/// [`SigningPolicy::sign`] for [`CLUSTER`] in [`TRUST_DOMAIN`] under a fixed root.
///
/// Invariant: whatever the CSR asks for, a signed certificate has exactly the policy's fields
/// (CA, path length 0, only the trust domain's URI SAN, no DNS name, no EKU, only
/// digitalSignature/keyCertSign/cRLSign, the policy's subject, the CSR's key).
pub fn csr_policy(data: &[u8]) -> Outcome {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &csr_policy_key_pkcs8(),
        &rng,
    )
    .unwrap_or_else(|e| panic!("the fixed fuzzing key does not load: {e}"));
    let signature = key
        .sign(&rng, data)
        .unwrap_or_else(|e| panic!("signing failed: {e}"));
    // ecdsa-with-SHA256
    let alg = [
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(signature.as_ref());
    let mut body = data.to_vec();
    body.extend_from_slice(&alg);
    body.extend(der_tlv(0x03, &bits));
    let csr_der = der_tlv(0x30, &body);

    let info = CsrInfo::parse(&csr_der).map_err(|e| e.to_string())?;
    let request = request();
    let issued = SigningPolicy::default()
        .sign(policy_ca(), &info, &request, now())
        .map_err(|e| e.to_string())?;

    let got = &issued.info;
    let td_uri = request.trust_domain.spiffe_uri();
    assert!(got.is_ca, "signed a non-CA: {got:?}");
    assert_eq!(got.path_len, Some(0), "path length: {got:?}");
    assert_eq!(got.uri_sans, vec![td_uri], "URI SANs: {got:?}");
    assert!(got.dns_sans.is_empty(), "DNS SANs: {got:?}");
    assert_eq!(got.extended_key_usage, None, "EKU: {got:?}");
    assert_eq!(
        got.key_usage,
        ["digitalSignature", "keyCertSign", "cRLSign"],
        "key usage: {got:?}"
    );
    let cn = cluster_ca_common_name(&request.cluster);
    assert_eq!(
        got.subject,
        format!("O=federator, L={CLUSTER}, CN={cn}"),
        "subject: {got:?}"
    );
    let cert = cert::parse_der(&issued.cert_der)
        .unwrap_or_else(|e| panic!("the signed certificate does not parse: {e}"));
    assert_eq!(
        cert.public_key().raw,
        info.public_key_info.as_slice(),
        "public key"
    );
    let allowed = [
        "2.5.29.14", // subject key identifier
        "2.5.29.35", // authority key identifier
        "2.5.29.17", // subject alternative name
        "2.5.29.19", // basic constraints
        "2.5.29.15", // key usage
    ];
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        assert!(
            allowed.contains(&oid.as_str()),
            "extension {oid} in {got:?}"
        );
    }
    Ok(got.subject.clone())
}

/// `cacerts` material as the agent and `federator ca inspect-cacerts` read it:
/// [`cacerts::inspect`] of `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem` and
/// optionally `istio-generated`, separated by [`SEPARATOR`], at [`now`]. Material found valid
/// has passed the end-to-end workload check.
pub fn cacerts(data: &[u8]) -> Outcome {
    let p = parts(data);
    let mut names = cacerts::FILES.to_vec();
    names.push(cacerts::ISTIO_GENERATED);
    let files: BTreeMap<String, Vec<u8>> = names
        .iter()
        .zip(&p)
        .map(|(n, b)| {
            let content = match *n {
                cacerts::CA_KEY => key_pem_or_der(b),
                cacerts::ISTIO_GENERATED => b.to_vec(),
                _ => pem_or_der(b, "CERTIFICATE"),
            };
            ((*n).to_owned(), content)
        })
        .collect();
    let report = cacerts::inspect(&files, now());
    if report.is_ok() {
        assert!(
            report.workload_check.is_some(),
            "material passed without the workload check"
        );
        Ok(report.trust_domain.unwrap_or_default())
    } else {
        Err(report
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.file, p.message))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// Trust bundles, per trust domain: [`TrustBundle::from_domain_pems`] of entries
/// `trust domain \n PEM`, separated by [`SEPARATOR`], then the canonical `root-cert.pem` and the SPIFFE
/// bundle of every trust domain. The canonical PEM parses back to the same roots; every SPIFFE
/// bundle lists each root of its domain once, with its exact DER in `x5c`.
pub fn trust_bundle(data: &[u8]) -> Outcome {
    use base64::Engine as _;
    let mut entries = Vec::new();
    for part in parts(data) {
        let (td, body) = match part.iter().position(|b| *b == b'\n') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &[][..]),
        };
        let td = TrustDomain::new(text(td)?).map_err(|e| e.to_string())?;
        let pem = String::from_utf8(pem_or_der(body, "CERTIFICATE"))
            .map_err(|_| "not UTF-8".to_owned())?;
        entries.push((td, pem));
    }
    let bundle = TrustBundle::from_domain_pems(entries.iter().map(|(td, pem)| (td, pem.as_str())))
        .map_err(|e| e.to_string())?;
    let pem = bundle.to_pem();
    let again = cert::parse_pem_certificates(pem.as_bytes(), "root-cert.pem");
    match again {
        Ok(ders) => assert_eq!(ders, bundle.roots(), "canonical PEM round trip"),
        Err(e) => assert!(bundle.is_empty(), "canonical PEM does not parse back: {e}"),
    }
    let mut summary = Vec::new();
    for td in bundle.trust_domains() {
        let roots = bundle.roots_of(td);
        match bundle.spiffe_bundle(td, 1) {
            Ok(sb) => {
                assert_eq!(sb.keys.len(), roots.len(), "one JWK per root of {td}");
                for (jwk, der) in sb.keys.iter().zip(&roots) {
                    let x5c = base64::engine::general_purpose::STANDARD
                        .decode(&jwk.x5c[0])
                        .unwrap_or_default();
                    assert_eq!(&x5c, der, "x5c of {td}");
                }
                summary.push(format!("{td}: {} root(s)", roots.len()));
            }
            Err(e) => summary.push(format!("{td}: no SPIFFE bundle ({e})")),
        }
    }
    Ok(summary.join("; "))
}

/// `trust domain \n document`: [`crate::spiffe::parse_bundle`] of the document for that trust
/// domain. What it accepts is a set of CA certificates of that trust domain, each once; written
/// back as a SPIFFE bundle and read again, it gives the same authorities.
pub fn spiffe_bundle(data: &[u8]) -> Outcome {
    let (td, doc) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let td = TrustDomain::new(text(td)?).map_err(|e| e.to_string())?;
    let b = crate::spiffe::parse_bundle(doc, &td).map_err(|e| e.to_string())?;
    assert_eq!(b.trust_domain, td);
    let mut bundle = TrustBundle::new();
    for der in &b.x509_authorities {
        let c = cert::parse_der(der);
        assert!(
            c.as_ref().is_ok_and(|c| c.is_ca()),
            "an accepted authority is a CA certificate"
        );
        let added = bundle.add(&td, der.clone());
        assert!(
            added.is_ok(),
            "an accepted authority is a valid root: {added:?}"
        );
    }
    assert_eq!(
        bundle.roots().len(),
        b.x509_authorities.len(),
        "each authority once"
    );
    if let Ok(written) = bundle.spiffe_bundle(&td, 1) {
        let text = serde_json::to_vec(&written).unwrap_or_default();
        let again = crate::spiffe::parse_bundle(&text, &td);
        assert!(again.is_ok(), "what federator writes reads back: {again:?}");
        let mut x = again.map(|a| a.x509_authorities).unwrap_or_default();
        let mut y = b.x509_authorities.clone();
        x.sort();
        y.sort();
        assert_eq!(x, y, "the authorities survive a write and a read");
    }
    Ok(format!(
        "{td}: {} X.509 authorities, {} JWT authorities, sequence {:?}, refresh hint {:?}, {} skipped",
        b.x509_authorities.len(),
        b.jwt_authorities.len(),
        b.sequence,
        b.refresh_hint,
        b.skipped.len()
    ))
}

/// A constructed hostile `cacerts` input (the regression case `cacerts/cross-signed-loop`):
/// `cert-chain.pem` holds `n` self-issued CA certificates with one name and one key, so each
/// verifies as the issuer of every other, above a cluster CA they issued; `root-cert.pem`
/// holds a root that issued none of them. A path search without a budget tries every ordering
/// of them.
pub fn cross_signed_loop(n: usize) -> crate::Result<Vec<u8>> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyUsagePurpose};
    let params = |cn: &str, is_ca: IsCa| -> crate::Result<CertificateParams> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = is_ca;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        p.not_before = now() - std::time::Duration::from_secs(3600);
        p.not_after = now() + std::time::Duration::from_secs(10 * 365 * 86400);
        p.serial_number = Some(crate::ca::random_serial()?);
        Ok(p)
    };
    let loop_key = PrivateKey::generate(crate::key::KeyAlgorithm::EcdsaP256)?;
    let loops = (0..n)
        .map(|_| {
            let p = params("loop", IsCa::Ca(BasicConstraints::Unconstrained))?;
            Ok(p.self_signed(loop_key.pair())?.der().to_vec())
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let first = loops
        .first()
        .ok_or_else(|| crate::Error::Invalid("n must be at least 1".into()))?;
    let issuer = Issuer::from_ca_cert_der(&first.as_slice().into(), loop_key.pair())?;
    let cluster_key = PrivateKey::generate(crate::key::KeyAlgorithm::EcdsaP256)?;
    let cluster = params("cluster CA", IsCa::Ca(BasicConstraints::Constrained(0)))?
        .signed_by(cluster_key.pair(), &issuer)?
        .der()
        .to_vec();
    let root = IssuingCa::create_root(&RootOptions::default(), now())?;
    let chain =
        cert::to_pem(std::iter::once(cluster.as_slice()).chain(loops.iter().map(Vec::as_slice)));
    Ok(join(&[
        cert::to_pem([cluster.as_slice()]).as_bytes(),
        cluster_key.to_pkcs8_pem().as_bytes(),
        chain.as_bytes(),
        root.cert_pem().as_bytes(),
    ]))
}

/// A constructed hostile certificate (the regression case `trust_bundle/ec-root-with-empty-point`):
/// `cert_der` with its EC public key replaced by `point` and everything else kept, the signature
/// included (so it no longer verifies; parsers that read roots without checking their
/// self-signature still take it). Random mutations cannot reach this: the lengths of three
/// nested DER structures must change together.
pub fn with_ec_point(cert_der: &[u8], point: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    let tbs = cert.tbs_certificate.as_ref();
    let spki = cert.tbs_certificate.subject_pki.raw;
    let header = |tlv: &[u8]| match tlv.get(1) {
        Some(&l) if l < 0x80 => 2,
        Some(&l) => 2 + (l & 0x7f) as usize,
        None => tlv.len(),
    };
    let spki_at = spki.as_ptr() as usize - tbs.as_ptr() as usize;
    let alg = *split_der(&spki[header(spki)..]).first()?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(point);
    let new_spki = der_tlv(0x30, &[alg.to_vec(), der_tlv(0x03, &bits)].concat());
    let new_tbs = der_tlv(
        0x30,
        &[
            &tbs[header(tbs)..spki_at],
            &new_spki,
            &tbs[spki_at + spki.len()..],
        ]
        .concat(),
    );
    let tbs_at = tbs.as_ptr() as usize - cert_der.as_ptr() as usize;
    let rest = &cert_der[tbs_at + tbs.len()..];
    Some(der_tlv(0x30, &[new_tbs, rest.to_vec()].concat()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_on_the_separator() {
        assert_eq!(parts(b"a"), [b"a".as_slice()]);
        assert_eq!(parts(&join(&[b"a", b"", b"c"])), [&b"a"[..], b"", b"c"]);
    }

    #[test]
    fn der_input_becomes_pem_blocks() {
        let ca = policy_ca();
        let two = [ca.cert_der(), ca.cert_der()].concat();
        let pem = pem_or_der(&two, "CERTIFICATE");
        assert_eq!(
            cert::parse_pem_certificates(&pem, "x").unwrap(),
            [ca.cert_der(), ca.cert_der()]
        );
        // PEM passes through; a DER header whose length overruns takes the rest whole.
        assert_eq!(pem_or_der(b"-----BEGIN X", "T"), b"-----BEGIN X");
        assert_eq!(split_der(&[0x30, 0x05, 1, 2]), [&[0x30, 0x05, 1, 2][..]]);
        assert_eq!(
            split_der(&[0x30, 0x81, 0x01, 9, 0x04, 0x00]),
            [&[0x30, 0x81, 0x01, 9][..], &[0x04, 0x00]]
        );
    }

    #[test]
    fn key_input_selects_its_pem_type() {
        let key = PrivateKey::generate(crate::key::KeyAlgorithm::EcdsaP256).unwrap();
        let der = pem::parse(key.to_pkcs8_pem()).unwrap().into_contents();
        let input = [vec![0u8], der].concat();
        assert_eq!(private_key(&input), Ok("ECDSA P-256".to_owned()));
    }
}
