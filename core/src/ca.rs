//! The issuing CA: the certificate and key that sign cluster CAs.
//!
//! It is either a self-signed root created here ([`IssuingCa::create_root`]) or an existing CA
//! imported from PEM ([`IssuingCa::import`]): an enterprise root, or better an intermediate an
//! offline enterprise root signed for the federation, given with its chain up to the root.
//! Cluster CAs then sit one level below it, so it must allow at least one more CA level.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::OffsetDateTime;

use crate::cert::{self, CertInfo};
use crate::key::{KeyAlgorithm, KeyKind, PrivateKey};
use crate::verify;
use crate::{Error, Result};

/// How far NotBefore is set in the past, to absorb clock skew between machines.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Options for a new self-signed root.
#[derive(Clone, Debug)]
pub struct RootOptions {
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime.
    pub ttl: Duration,
    /// Organization (O) of the subject.
    pub organization: String,
    /// Common name (CN) of the subject.
    pub common_name: String,
    /// BasicConstraints path length; at least 1 so cluster CAs can sit below it.
    pub path_len: u8,
}

impl Default for RootOptions {
    fn default() -> Self {
        Self {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ttl: Duration::from_secs(87_600 * 3600),
            organization: "federator".into(),
            common_name: "federator root CA".into(),
            path_len: 1,
        }
    }
}

/// The CA that signs cluster CAs, with its key and the chain above it.
#[derive(Debug)]
pub struct IssuingCa {
    cert_der: Vec<u8>,
    key: PrivateKey,
    /// The issuer of `cert_der` and so on up to and including the root; empty for a root.
    chain_above: Vec<Vec<u8>>,
}

/// Checks a CA certificate that is to sign cluster CAs, with the chain above it (its issuer
/// first, the root last; empty for a root), without its key: CA:TRUE with room for one more
/// CA level, keyCertSign, no SHA-1, a supported key that is not too weak, valid at `now`, and
/// a chain that leads to a self-signed root. Returns the kind of its key. What
/// [`IssuingCa::import`] checks, and what a Vault issuer is checked against before a rotation.
pub fn check_issuer(
    cert_der: &[u8],
    chain_above: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<KeyKind> {
    let ca = cert::parse_der(cert_der)?;
    let subject = ca.subject().to_string();
    let reject = |why: String| Error::CaRejected(format!("{subject}: {why}"));

    match ca.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if bc.value.path_len_constraint == Some(0) {
                return Err(reject(
                    "its path length is 0, so it cannot sign cluster CAs; use a CA with pathlen >= 1 (or none)".into(),
                ));
            }
        }
        Ok(_) => {
            return Err(reject(
                "it is not a CA certificate (BasicConstraints CA:TRUE is missing)".into(),
            ));
        }
        Err(e) => return Err(reject(format!("malformed BasicConstraints ({e})"))),
    }
    match ca.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => {}
        Ok(Some(_)) => return Err(reject("its key usage does not include keyCertSign".into())),
        Ok(None) => {
            return Err(reject(
                "it has no key usage extension; a CA needs keyCertSign".into(),
            ));
        }
        Err(e) => return Err(reject(format!("malformed key usage ({e})"))),
    }
    if cert::is_sha1_signed(&ca) {
        return Err(reject(
            "it is signed with SHA-1, which istiod (Go) refuses".into(),
        ));
    }
    let kind = KeyKind::from_spki(ca.public_key())
        .map_err(|d| reject(format!("unsupported or weak key: {d}")))?;
    let (not_before, not_after) = cert::validity(&ca);
    if now < not_before {
        return Err(reject(format!(
            "it is not valid yet (NotBefore {})",
            cert::rfc3339(not_before)
        )));
    }
    if now > not_after {
        return Err(reject(format!(
            "it expired on {}",
            cert::rfc3339(not_after)
        )));
    }
    // What remains of Go's and Envoy's rules (EKU compatibility), checked the same way as
    // in every CA path.
    verify::check_ca_cert(cert_der, 1, now).map_err(|e| Error::CaRejected(e.to_string()))?;
    let self_issued = ca.subject().as_raw() == ca.issuer().as_raw();
    if self_issued && !chain_above.is_empty() {
        return Err(reject(
            "it is a self-signed root but the file holds more certificates after it; give only the root".into(),
        ));
    }
    if !self_issued {
        if chain_above.is_empty() {
            return Err(reject(
                "it is an intermediate CA: append its issuer chain up to the root to the certificate file (this CA first, the root last)".into(),
            ));
        }
        verify::verify_issuer_chain(cert_der, chain_above, now)
            .map_err(|e| reject(e.to_string()))?;
    }
    Ok(kind)
}

/// What a root and an issuing CA created here have in common: the names of `opts`, a CA with
/// `opts.path_len`, certificate and CRL signing only, backdated from `now`, a random serial.
/// The caller sets `not_after` (and how it is signed).
fn ca_params(opts: &RootOptions, now: OffsetDateTime) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, opts.organization.as_str());
    params
        .distinguished_name
        .push(DnType::CommonName, opts.common_name.as_str());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(opts.path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BACKDATE;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

impl IssuingCa {
    /// Creates a self-signed root.
    pub fn create_root(opts: &RootOptions, now: OffsetDateTime) -> Result<Self> {
        if opts.path_len < 1 {
            return Err(Error::CaRejected(
                "a root needs a path length of at least 1, so that cluster CAs can sit below it"
                    .into(),
            ));
        }
        if opts.ttl < Duration::from_secs(3600) {
            return Err(Error::CaRejected(
                "a root must live at least one hour".into(),
            ));
        }
        let key = PrivateKey::generate(opts.key_algorithm)?;
        let mut params = ca_params(opts, now)?;
        params.not_after = now + opts.ttl;
        let cert = params.self_signed(key.pair())?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key,
            chain_above: Vec::new(),
        })
    }

    /// Issues a subordinate CA below this one, with a fresh key, that can sign cluster CAs
    /// (`opts.path_len` >= 1): what an offline enterprise root signs for the federation to
    /// import. Its chain above is this CA's, so [`IssuingCa::import`] takes its
    /// [`IssuingCa::chain_pem`] as it is. Lives at most as long as this CA.
    pub fn create_intermediate(&self, opts: &RootOptions, now: OffsetDateTime) -> Result<Self> {
        if opts.path_len < 1 {
            return Err(Error::CaRejected(
                "an issuing CA needs a path length of at least 1, so that cluster CAs can sit below it"
                    .into(),
            ));
        }
        let key = PrivateKey::generate(opts.key_algorithm)?;
        let mut params = ca_params(opts, now)?;
        params.use_authority_key_identifier_extension = true;
        params.not_after = (now + opts.ttl).min(self.not_after()?);
        let cert = params.signed_by(key.pair(), &self.rcgen_issuer()?)?;
        let chain_above = std::iter::once(self.cert_der.clone())
            .chain(self.chain_above.iter().cloned())
            .collect();
        Ok(Self {
            cert_der: cert.der().to_vec(),
            key,
            chain_above,
        })
    }

    /// Imports an existing CA. `cert_pem` holds the CA certificate first, then — when it is not
    /// a self-signed root — its issuers up to and including the root. Refuses, with a precise
    /// reason, a certificate that is not a CA, cannot sign another CA level, does not match the
    /// key, is not valid at `now`, uses a weak or unsupported key or SHA-1, or whose chain does
    /// not lead to a root.
    pub fn import(cert_pem: &[u8], key_pem: &[u8], now: OffsetDateTime) -> Result<Self> {
        let certs = cert::parse_pem_certificates(cert_pem, "CA certificate")?;
        let key = PrivateKey::from_pem(key_pem, "CA key")?;
        let (cert_der, chain_above) = certs
            .split_first()
            .map(|(c, rest)| (c.clone(), rest.to_vec()))
            .ok_or_else(|| Error::CaRejected("the certificate file is empty".into()))?;
        let kind = check_issuer(&cert_der, &chain_above, now)?;
        let ca = cert::parse_der(&cert_der)?;
        if kind != key.kind() || !key.matches(ca.public_key()) {
            return Err(Error::CaRejected(format!(
                "{}: the private key does not match the certificate",
                ca.subject()
            )));
        }
        Ok(Self {
            cert_der,
            key,
            chain_above,
        })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        cert::to_pem([self.cert_der.as_slice()])
    }

    /// The CA key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The certificates above the CA certificate, up to and including the root (DER).
    pub fn chain_above(&self) -> &[Vec<u8>] {
        &self.chain_above
    }

    /// The CA certificate followed by every certificate above it, up to the root (PEM):
    /// what follows a cluster CA in `cert-chain.pem`.
    pub fn chain_pem(&self) -> String {
        cert::to_pem(
            std::iter::once(self.cert_der.as_slice())
                .chain(self.chain_above.iter().map(Vec::as_slice)),
        )
    }

    /// The trust anchor: the root at the top of the chain (DER).
    pub fn root_der(&self) -> &[u8] {
        self.chain_above.last().unwrap_or(&self.cert_der)
    }

    /// A summary of the CA certificate.
    pub fn info(&self) -> Result<CertInfo> {
        CertInfo::from_der(&self.cert_der)
    }

    /// NotAfter of the CA certificate.
    pub fn not_after(&self) -> Result<OffsetDateTime> {
        Ok(cert::validity(&cert::parse_der(&self.cert_der)?).1)
    }

    /// An rcgen issuer for signing below this CA. It reuses the CA's exact subject and key
    /// identifier, so issued certificates' issuer names and AKIs match.
    pub(crate) fn rcgen_issuer(&self) -> Result<Issuer<'_, &KeyPair>> {
        Ok(Issuer::from_ca_cert_der(
            &self.cert_der.as_slice().into(),
            self.key.pair(),
        )?)
    }
}

/// A random, positive, 16-byte serial number (RFC 5280 §4.1.2.2).
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Key("the system random number generator failed".into()))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte, so the encoding is always 16 bytes
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}
