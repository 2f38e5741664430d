//! Certificates and keys for the simulated clusters (rcgen, ECDSA P-256).
//!
//! Each cluster gets a serving CA (signs the apiserver's certificate for `127.0.0.1` and
//! `localhost`), a separate client CA (signs client certificates: the admin's, CN=admin
//! O=system:masters, and any identity a test asks for) and a service-account signing key.
//! Private keys are written with mode 0600.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::{Error, Result};

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertAndKey {
    /// Certificate PEM.
    pub cert_pem: String,
    /// PKCS#8 private key PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A self-signed CA that can issue serving and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.issuer.pem())
            .finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

impl Ca {
    /// A new CA named `common_name`, valid for ten years.
    pub fn new(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "federator testbed");
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut p, 3650);
        let issuer = CertifiedIssuer::self_signed(p, key)?;
        Ok(Self { issuer, key_pem })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn leaf(&self, mut p: CertificateParams) -> Result<CertAndKey> {
        let key = KeyPair::generate()?;
        validity(&mut p, 365);
        p.use_authority_key_identifier_extension = true;
        // A fresh key per certificate, so rcgen's default serial (a hash of the public key) is
        // unique per certificate.
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A TLS server certificate for `127.0.0.1` and `localhost`.
    pub fn issue_serving(&self, common_name: &str) -> Result<CertAndKey> {
        self.issue_serving_for(common_name, &[], &[])
    }

    /// A TLS server certificate for `127.0.0.1`, `localhost`, and the extra addresses and DNS
    /// names given.
    pub fn issue_serving_for(
        &self,
        common_name: &str,
        ips: &[IpAddr],
        dns: &[&str],
    ) -> Result<CertAndKey> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into()?),
        ];
        p.subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        for d in dns {
            p.subject_alt_names.push(SanType::DnsName((*d).try_into()?));
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf(p)
    }

    /// A TLS client certificate: Kubernetes reads the user from CN and the groups from O.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<CertAndKey> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        for g in groups {
            p.distinguished_name.push(DnType::OrganizationName, *g);
        }
        p.distinguished_name.push(DnType::CommonName, user);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(p)
    }
}

/// A service-account token signing key: (private PKCS#8 PEM, public SPKI PEM).
pub fn service_account_key() -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// Writes a private file (mode 0600 from creation on, never world-readable in between).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("create", path))?;
    // The mode only applies on creation: tighten an existing file too.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io("chmod", path))?;
    f.write_all(contents.as_bytes())
        .map_err(Error::io("write", path))
}

/// Writes a public file.
pub fn write_public(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_private(&p, "secret").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn issues_certificates() {
        let ca = Ca::new("test ca").unwrap();
        let s = ca.issue_serving("apiserver").unwrap();
        assert!(s.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(s.key_pem.contains("PRIVATE KEY"));
        let c = ca.issue_client("alice", &["devs", "ops"]).unwrap();
        assert_ne!(c.cert_pem, s.cert_pem);
    }
}
