//! The hub's signing policy for cluster CAs.
//!
//! The policy decides every field of a cluster CA itself and never copies anything from the
//! CSR but its public key:
//!
//! | field | value |
//! |---|---|
//! | subject | `O=<issuer's O>, L=<cluster>, CN=<cluster> intermediate CA` |
//! | SAN | `URI:spiffe://<trust domain>` (the SPIFFE ID of the trust domain) |
//! | BasicConstraints | critical, CA:TRUE, pathlen 0 |
//! | KeyUsage | critical, keyCertSign, cRLSign, digitalSignature |
//! | ExtendedKeyUsage | none |
//! | NotBefore | now − 5 min, not before the issuer's NotBefore |
//! | NotAfter | now + TTL, capped at the issuer's NotAfter |
//! | serial | 16 random bytes |
//! | SKI / AKI | SKI from the public key; AKI = the issuer's SKI |
//! | NameConstraints | only with [`SigningPolicy::constrain_to_trust_domain`]: critical, URI permitted `<trust domain>`, excluded `.<trust domain>` ([`crate::name_constraint`]) |
//!
//! A CSR that asks for anything else — another trust domain, a DNS name, a longer path, an
//! EKU, an extra key usage, an extension the policy does not know — is refused with the
//! reason ([`SigningPolicy::check`]). Every certificate it signs is verified back to the root
//! before it is returned.

use std::time::Duration;

use rcgen::{CertificateParams, DnType};
use time::OffsetDateTime;

use crate::ca::{BACKDATE, IssuingCa, random_serial};
use crate::cert::{self, CertInfo};
use crate::csr::{CsrInfo, cluster_ca_common_name};
use crate::identity::{ClusterName, TrustDomain};
use crate::name_constraint::{self, Constraint};
use crate::verify;
use crate::{Error, Result};

/// Key usages a cluster CA gets, and the only ones a CSR may ask for.
const GRANTED_KEY_USAGES: [&str; 3] = ["digitalSignature", "keyCertSign", "cRLSign"];

/// What the hub is asked to sign: a CA for this cluster in this trust domain.
#[derive(Clone, Debug)]
pub struct ClusterCaRequest {
    /// The member cluster.
    pub cluster: ClusterName,
    /// The cluster's trust domain.
    pub trust_domain: TrustDomain,
}

/// The signing policy.
#[derive(Clone, Debug)]
pub struct SigningPolicy {
    /// Lifetime given to a cluster CA (capped at the issuer's NotAfter).
    pub ttl: Duration,
    /// Bind every cluster CA to its own trust domain with a URI name constraint
    /// ([`crate::name_constraint`]): sidecar meshes only, rustls-webpki (ztunnel) rejects it.
    pub constrain_to_trust_domain: bool,
}

impl Default for SigningPolicy {
    fn default() -> Self {
        Self::with_ttl(Duration::from_secs(8760 * 3600))
    }
}

/// A signed cluster CA.
#[derive(Clone, Debug)]
pub struct IssuedCa {
    /// The cluster CA certificate (DER).
    pub cert_der: Vec<u8>,
    /// The cluster CA certificate followed by every certificate above it up to the root
    /// (PEM): the content of `cert-chain.pem`.
    pub chain_pem: String,
    /// A summary of the cluster CA certificate.
    pub info: CertInfo,
}

impl SigningPolicy {
    /// The policy with lifetime `ttl` and no name constraint.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            constrain_to_trust_domain: false,
        }
    }

    /// Refuses a CSR that asks for anything this policy does not grant.
    pub fn check(&self, csr: &CsrInfo, request: &ClusterCaRequest) -> Result<()> {
        let refuse = |why: String| Err(Error::CsrRefused(why));
        let td_uri = request.trust_domain.spiffe_uri();
        for uri in &csr.uri_sans {
            if uri == &td_uri {
                continue;
            }
            return match crate::identity::SpiffeId::parse(uri) {
                Ok(id) if id.trust_domain() != &request.trust_domain => refuse(format!(
                    "it asks for trust domain {} but cluster {} is in trust domain {}",
                    id.trust_domain(),
                    request.cluster,
                    request.trust_domain
                )),
                _ => refuse(format!(
                    "it asks for the URI SAN {uri}; the policy grants only {td_uri}"
                )),
            };
        }
        if let Some(dns) = csr.dns_sans.first() {
            return refuse(format!(
                "it asks for the DNS name {dns}; the policy grants only the URI SAN {td_uri}"
            ));
        }
        if let Some(other) = csr.other_sans.first() {
            return refuse(format!(
                "it asks for the name {other}; the policy grants only the URI SAN {td_uri}"
            ));
        }
        match csr.basic_constraints {
            None | Some((true, Some(0))) => {}
            Some((false, _)) => {
                return refuse(
                    "it asks for a non-CA certificate; the hub issues cluster CAs only".into(),
                );
            }
            Some((true, None)) => {
                return refuse(
                    "it asks for an unlimited path length; the policy grants path length 0".into(),
                );
            }
            Some((true, Some(n))) => {
                return refuse(format!(
                    "it asks for path length {n}; the policy grants path length 0"
                ));
            }
        }
        if let Some(extra) = csr
            .key_usage
            .iter()
            .find(|u| !GRANTED_KEY_USAGES.contains(&u.as_str()))
        {
            return refuse(format!(
                "it asks for key usage {extra}; the policy grants only {}",
                GRANTED_KEY_USAGES.join(", ")
            ));
        }
        if let Some(eku) = &csr.extended_key_usage {
            return refuse(format!(
                "it asks for extended key usage {}; cluster CAs carry none",
                eku.join(", ")
            ));
        }
        if let Some(ext) = csr.other_extensions.first() {
            return refuse(format!(
                "it asks for extension {ext}, which the policy does not grant"
            ));
        }
        Ok(())
    }

    /// Checks the CSR, then signs a cluster CA under `issuer` with the fields the policy
    /// decides, and verifies the result back to the root.
    pub fn sign(
        &self,
        issuer: &IssuingCa,
        csr: &CsrInfo,
        request: &ClusterCaRequest,
        now: OffsetDateTime,
    ) -> Result<IssuedCa> {
        self.check(csr, request)?;
        if self.ttl.is_zero() {
            return Err(Error::CsrRefused("the requested lifetime is zero".into()));
        }
        let issuer_cert = cert::parse_der(issuer.cert_der())?;
        let (issuer_nb, issuer_na) = cert::validity(&issuer_cert);
        if now >= issuer_na {
            return Err(Error::CaRejected(format!(
                "the issuing CA expired on {}; rotate the root",
                cert::rfc3339(issuer_na)
            )));
        }
        let not_before = (now - BACKDATE).max(issuer_nb);
        let not_after = (now + self.ttl).min(issuer_na);

        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(org) = issuer_org(&issuer_cert) {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params
            .distinguished_name
            .push(DnType::LocalityName, request.cluster.as_str());
        params
            .distinguished_name
            .push(DnType::CommonName, cluster_ca_common_name(&request.cluster));
        crate::csr::cluster_ca_profile(&mut params, &request.trust_domain)?;
        if self.constrain_to_trust_domain {
            params
                .custom_extensions
                .push(name_constraint::extension(&request.trust_domain));
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);

        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.public_key_info)
            .map_err(|e| Error::CsrRefused(format!("its public key cannot be used ({e})")))?;
        let signed = params.signed_by(&public_key, &issuer.rcgen_issuer()?)?;
        let cert_der = signed.der().to_vec();

        // Prove the result: issuer name and key id reproduced exactly, path valid to the root.
        let issued = cert::parse_der(&cert_der)?;
        if issued.issuer().as_raw() != issuer_cert.subject().as_raw() {
            return Err(Error::CaRejected(
                "the issuer's subject name cannot be reproduced exactly (multi-valued or unusual name encoding)".into(),
            ));
        }
        let chain_above: Vec<Vec<u8>> = std::iter::once(issuer.cert_der().to_vec())
            .chain(issuer.chain_above().iter().cloned())
            .collect();
        verify::verify_ca_path(&cert_der, &chain_above, &[issuer.root_der().to_vec()], now)?;
        let constraint = check_issued(&cert_der, &csr.public_key_info, &request.trust_domain, now)?;
        if (constraint != Constraint::None) != self.constrain_to_trust_domain {
            return Err(Error::Verification(format!(
                "the signed cluster CA's name constraint ({constraint:?}) is not what the policy asks for"
            )));
        }

        Ok(IssuedCa {
            chain_pem: cert::to_pem(
                std::iter::once(cert_der.as_slice()).chain(chain_above.iter().map(Vec::as_slice)),
            ),
            info: CertInfo::from_der(&cert_der)?,
            cert_der,
        })
    }
}

/// Checks a cluster CA certificate that came back from a signer (the local policy, Vault, or
/// the hub as seen by the agent): it carries the expected public key, is a CA with path
/// length 0 and keyCertSign, records the expected trust domain, has no name constraint or
/// exactly the one binding it to that trust domain, and is valid at `now`. Returns its name
/// constraint.
pub fn check_issued(
    cert_der: &[u8],
    public_key_info: &[u8],
    trust_domain: &TrustDomain,
    now: OffsetDateTime,
) -> Result<Constraint> {
    let cert = cert::parse_der(cert_der)?;
    let bad = |why: String| {
        Err(Error::Verification(format!(
            "the signed cluster CA is not acceptable: {why}"
        )))
    };
    if cert.public_key().raw != public_key_info {
        return bad("it does not carry the public key of the CSR".into());
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca && bc.value.path_len_constraint == Some(0) => {}
        _ => return bad("it is not a CA with path length 0".into()),
    }
    let uris = cert::uri_sans(&cert);
    if !uris.contains(&trust_domain.spiffe_uri()) {
        return bad(format!(
            "it does not record trust domain {trust_domain} (URI SANs: {uris:?})"
        ));
    }
    if let Some(other) = uris.iter().find(|u| **u != trust_domain.spiffe_uri()) {
        return bad(format!("it carries the extra URI SAN {other}"));
    }
    let constraint = match name_constraint::read(&cert) {
        Ok(Constraint::TrustDomain(host)) if host != trust_domain.as_str() => {
            return bad(format!(
                "its name constraint binds it to trust domain {host}, not {trust_domain}"
            ));
        }
        Ok(c) => c,
        Err(e) => return bad(e.to_string()),
    };
    verify::check_ca_cert(cert_der, 0, now)?;
    Ok(constraint)
}

fn issuer_org(issuer: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    issuer
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .map(str::to_owned)
}
