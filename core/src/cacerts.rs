//! Istio's plug-in CA material (`istio-system/cacerts`) and a validator for it.
//!
//! Layout (istiod's own format, `security/pkg/pki/ca/ca.go`):
//!
//! | file | content |
//! |---|---|
//! | `ca-cert.pem` | the cluster CA certificate (istiod signs with the first block) |
//! | `ca-key.pem` | its key, PKCS#8 |
//! | `cert-chain.pem` | the cluster CA, then every intermediate, then the root; istiod appends it to every workload certificate |
//! | `root-cert.pem` | the whole trust bundle, canonical PEM |
//!
//! [`inspect`] applies the checks istiod applies when it loads these files (completeness, key
//! parsing, key match, CA flag, chain verification with Go's rules) and the `keyCertSign`
//! check Envoy and ztunnel apply, and names the file and the problem for each failure.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType};
use serde::Serialize;
use time::OffsetDateTime;

use crate::bundle::TrustBundle;
use crate::ca::random_serial;
use crate::cert::{self, CertInfo};
use crate::identity::SpiffeId;
use crate::key::{KeyAlgorithm, PrivateKey};
use crate::verify;
use crate::{Error, Result};

/// The signing certificate.
pub const CA_CERT: &str = "ca-cert.pem";
/// The signing key.
pub const CA_KEY: &str = "ca-key.pem";
/// The chain appended to every workload certificate.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// The trust anchors.
pub const ROOT_CERT: &str = "root-cert.pem";
/// The key istiod writes into its own self-signed `cacerts`; a plug-in CA must never have it.
pub const ISTIO_GENERATED: &str = "istio-generated";
/// The four files, in the order they are listed.
pub const FILES: [&str; 4] = [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT];

/// The four `cacerts` files. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCerts {
    /// `ca-cert.pem`.
    pub ca_cert: String,
    /// `ca-key.pem` (secret).
    pub ca_key: String,
    /// `cert-chain.pem`.
    pub cert_chain: String,
    /// `root-cert.pem`.
    pub root_cert: String,
}

impl fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCerts")
            .field("ca_cert", &self.ca_cert)
            .field("ca_key", &"<redacted>")
            .field("cert_chain", &self.cert_chain)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

/// A workload certificate minted from `cacerts` material, the way istiod would.
#[derive(Debug)]
pub struct WorkloadCert {
    /// The leaf, then the content of `cert-chain.pem` (DER).
    pub chain: Vec<Vec<u8>>,
    /// The same chain as PEM.
    pub chain_pem: String,
    /// The leaf's key.
    pub key: PrivateKey,
}

impl CaCerts {
    /// Assembles `cacerts` from a signed cluster CA chain (the cluster CA first, then every
    /// certificate up to the root, PEM), its key and the federation's trust bundle.
    pub fn assemble(chain_pem: &str, key: &PrivateKey, bundle: &TrustBundle) -> Result<Self> {
        let chain = cert::parse_pem_certificates(chain_pem.as_bytes(), "signed chain")?;
        let first = chain
            .first()
            .ok_or_else(|| Error::Certificate("the signed chain is empty".into()))?;
        if !key.matches(cert::parse_der(first)?.public_key()) {
            return Err(Error::Key(
                "the key does not match the signed cluster CA".into(),
            ));
        }
        Ok(Self {
            ca_cert: cert::to_pem([first.as_slice()]),
            ca_key: key.to_pkcs8_pem(),
            cert_chain: cert::to_pem(chain.iter().map(Vec::as_slice)),
            root_cert: bundle.to_pem(),
        })
    }

    /// The files, by name.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        [
            (CA_CERT, &self.ca_cert),
            (CA_KEY, &self.ca_key),
            (CERT_CHAIN, &self.cert_chain),
            (ROOT_CERT, &self.root_cert),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
        .collect()
    }

    /// Reads the four files from a map (a directory or a Secret's data). Missing or non-UTF-8
    /// files are an error; [`inspect`] gives the full report instead.
    pub fn from_files(files: &BTreeMap<String, Vec<u8>>) -> Result<Self> {
        let get = |name: &str| -> Result<String> {
            let bytes = files.get(name).ok_or_else(|| Error::Pem {
                source_name: name.to_owned(),
                reason: "missing".into(),
            })?;
            String::from_utf8(bytes.clone()).map_err(|_| Error::Pem {
                source_name: name.to_owned(),
                reason: "not PEM text".into(),
            })
        };
        Ok(Self {
            ca_cert: get(CA_CERT)?,
            ca_key: get(CA_KEY)?,
            cert_chain: get(CERT_CHAIN)?,
            root_cert: get(ROOT_CERT)?,
        })
    }

    /// Mints a workload certificate (an X.509-SVID for `id`) signed by this cluster CA, with
    /// the fields istiod gives one (`security/pkg/pki/util/generate_cert.go`): empty subject,
    /// critical URI SAN, digitalSignature + keyEncipherment, serverAuth + clientAuth,
    /// CA:FALSE, NotBefore 2 minutes back, NotAfter capped at the CA's.
    pub fn issue_workload_cert(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<WorkloadCert> {
        let signer_key = PrivateKey::from_pem(self.ca_key.as_bytes(), CA_KEY)?;
        let ca_ders = cert::parse_pem_certificates(self.ca_cert.as_bytes(), CA_CERT)?;
        let ca_der = ca_ders
            .first()
            .ok_or_else(|| Error::Certificate(format!("{CA_CERT} is empty")))?;
        let ca_not_after = cert::validity(&cert::parse_der(ca_der)?).1;
        let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), signer_key.pair())?;
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let uri = id
            .to_string()
            .try_into()
            .map_err(|e| Error::Invalid(format!("{id} cannot be a URI SAN ({e})")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - time::Duration::minutes(2);
        params.not_after = (now + ttl).min(ca_not_after);
        params.serial_number = Some(random_serial()?);
        let leaf = params.signed_by(key.pair(), &issuer)?;
        let mut chain = vec![leaf.der().to_vec()];
        chain.extend(cert::parse_pem_certificates(
            self.cert_chain.as_bytes(),
            CERT_CHAIN,
        )?);
        Ok(WorkloadCert {
            chain_pem: cert::to_pem(chain.iter().map(Vec::as_slice)),
            chain,
            key,
        })
    }
}

/// One problem found in `cacerts` material.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The file it is about.
    pub file: String,
    /// What is wrong, and where it matters.
    pub message: String,
}

/// Everything [`inspect`] learnt about `cacerts` material.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Inspection {
    /// The signing certificate (`ca-cert.pem`, first block).
    pub ca: Option<CertInfo>,
    /// The signing key's type.
    pub key: Option<String>,
    /// The trust domain recorded in the signing certificate.
    pub trust_domain: Option<String>,
    /// `cert-chain.pem`, in file order.
    pub chain: Vec<CertInfo>,
    /// `root-cert.pem`, in file order.
    pub roots: Vec<CertInfo>,
    /// The SPIFFE ID of a test workload certificate minted from this material and verified
    /// against `root-cert.pem` with rustls-webpki, or below a URI name constraint (which
    /// webpki refuses) with [`verify::verify_constrained_workload_chain`] (set when that
    /// succeeded).
    pub workload_check: Option<String>,
    /// Every problem; empty when istiod would load the material and peers would accept it.
    pub problems: Vec<Problem>,
}

impl Inspection {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Validates `cacerts` files (a directory or a Secret's data) at time `now`.
pub fn inspect(files: &BTreeMap<String, Vec<u8>>, now: OffsetDateTime) -> Inspection {
    let mut out = Inspection::default();
    let mut problem = |file: &str, message: String| {
        out.problems.push(Problem {
            file: file.to_owned(),
            message,
        })
    };

    if files.contains_key(ISTIO_GENERATED) {
        problem(
            ISTIO_GENERATED,
            "present: istiod would treat cacerts as its own self-signed CA store, not a plug-in CA; remove this key".into(),
        );
    }
    let present: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| files.get(*f).is_some_and(|b| !b.is_empty()))
        .collect();
    for f in FILES {
        if !present.contains(&f) {
            problem(
                f,
                if present.is_empty() {
                    "missing (with no plug-in files istiod falls back to a self-signed CA)".into()
                } else {
                    "missing: istiod refuses to start with an incomplete signing CA bundle".into()
                },
            );
        }
    }
    let read = |name: &str| files.get(name).filter(|b| !b.is_empty());

    let ca_der = read(CA_CERT).and_then(|b| match cert::parse_pem_certificates(b, CA_CERT) {
        Ok(certs) => certs.into_iter().next(),
        Err(e) => {
            problem(CA_CERT, strip_source(&e, CA_CERT));
            None
        }
    });
    let key = read(CA_KEY).and_then(|b| match PrivateKey::from_pem(b, CA_KEY) {
        Ok(k) => Some(k),
        Err(e) => {
            problem(CA_KEY, strip_source(&e, CA_KEY));
            None
        }
    });
    let chain = read(CERT_CHAIN).and_then(|b| match cert::parse_pem_certificates(b, CERT_CHAIN) {
        Ok(c) => Some(c),
        Err(e) => {
            problem(CERT_CHAIN, strip_source(&e, CERT_CHAIN));
            None
        }
    });
    let roots = read(ROOT_CERT).and_then(|b| match cert::parse_pem_certificates(b, ROOT_CERT) {
        Ok(c) => Some(c),
        Err(e) => {
            problem(ROOT_CERT, strip_source(&e, ROOT_CERT));
            None
        }
    });

    if let Some(der) = &ca_der {
        match CertInfo::from_der(der) {
            Ok(info) => {
                if !info.is_ca {
                    problem(CA_CERT, "not a CA certificate: istiod refuses it (\"certificate is not authorized to sign other certificates\")".into());
                }
                if !info.key_usage.iter().any(|u| u == "keyCertSign") {
                    problem(CA_CERT, "its key usage lacks keyCertSign: Envoy and ztunnel reject chains through it".into());
                }
                problem_if_time(&mut problem, CA_CERT, &info, now);
                if let Some(nc) = &info.name_constraint
                    && info.trust_domain.as_ref() != Some(nc)
                {
                    problem(
                        CA_CERT,
                        format!(
                            "its name constraints do not bind it to its own trust domain {}: {nc}",
                            info.trust_domain.as_deref().unwrap_or("(none)")
                        ),
                    );
                }
                out.trust_domain.clone_from(&info.trust_domain);
                out.ca = Some(info);
            }
            Err(e) => problem(CA_CERT, e.to_string()),
        }
        if let Some(k) = &key {
            match cert::parse_der(der) {
                Ok(c) if !k.matches(c.public_key()) => problem(
                    CA_KEY,
                    format!(
                        "does not match {CA_CERT} (istiod: \"the cert does not match the key\")"
                    ),
                ),
                _ => {}
            }
        }
    }

    if let Some(chain) = &chain {
        out.chain = chain
            .iter()
            .filter_map(|d| CertInfo::from_der(d).ok())
            .collect();
        if let (Some(first), Some(ca)) = (chain.first(), &ca_der)
            && first != ca
        {
            problem(
                CERT_CHAIN,
                format!(
                    "does not start with {CA_CERT}: workloads would send a chain without their issuer"
                ),
            );
        }
        if let Some(first) = out.chain.first()
            && let Ok(c) = cert::parse_der(&chain[0])
            && now > cert::validity(&c).1
        {
            problem(
                CERT_CHAIN,
                format!(
                    "its first certificate expired on {} (istiod: \"cert chain has expired\")",
                    first.not_after
                ),
            );
        }
    }

    if let Some(roots) = &roots {
        out.roots = roots
            .iter()
            .filter_map(|d| CertInfo::from_der(d).ok())
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for info in &out.roots {
            if !seen.insert(info.sha256.clone()) {
                problem(
                    ROOT_CERT,
                    format!(
                        "holds {} twice: Kubernetes refuses duplicates in a ClusterTrustBundle",
                        info.subject
                    ),
                );
            }
        }
    }

    if let (Some(ca), Some(chain), Some(roots)) = (&ca_der, &chain, &roots)
        && let Err(e) = verify::verify_ca_path(ca, chain, roots, now)
    {
        problem(
            CA_CERT,
            format!("does not verify against {ROOT_CERT} through {CERT_CHAIN}: {e}"),
        );
    }
    if let Some(k) = &key {
        out.key = Some(k.kind().to_string());
    }
    // End to end, as a peer would see it: a workload certificate minted from this material
    // verifies against root-cert.pem with rustls-webpki — or, below federator's URI name
    // constraint (which webpki refuses outright), with federator's own rules.
    let constrained = out.ca.as_ref().is_some_and(|c| c.name_constraint.is_some());
    if out.problems.is_empty()
        && let (Ok(material), Some(roots)) = (CaCerts::from_files(files), &roots)
    {
        let td = out
            .trust_domain
            .clone()
            .unwrap_or_else(|| crate::identity::DEFAULT_TRUST_DOMAIN.to_owned());
        let checked =
            SpiffeId::parse(&format!("spiffe://{td}/ns/federator/sa/inspect")).and_then(|id| {
                let leaf = material.issue_workload_cert(&id, Duration::from_secs(300), now)?;
                if constrained {
                    verify::verify_constrained_workload_chain(&leaf.chain, roots, now)
                } else {
                    verify::verify_workload_chain(&leaf.chain, roots, now)
                }
            });
        match checked {
            Ok(id) => out.workload_check = Some(id.to_string()),
            Err(e) => out.problems.push(Problem {
                file: CERT_CHAIN.to_owned(),
                message: format!(
                    "a workload certificate minted from this material does not verify: {e}"
                ),
            }),
        }
    }
    out
}

fn problem_if_time(
    problem: &mut impl FnMut(&str, String),
    file: &str,
    info: &CertInfo,
    now: OffsetDateTime,
) {
    let rfc = time::format_description::well_known::Rfc3339;
    if let (Ok(nb), Ok(na)) = (
        OffsetDateTime::parse(&info.not_before, &rfc),
        OffsetDateTime::parse(&info.not_after, &rfc),
    ) {
        if now < nb {
            problem(
                file,
                format!(
                    "not valid until {} (clock skew? istiod refuses it until then)",
                    info.not_before
                ),
            );
        }
        if now > na {
            problem(file, format!("expired on {}", info.not_after));
        }
    }
}

/// Error text without the `<file>: ` prefix, since problems already name the file.
fn strip_source(e: &Error, file: &str) -> String {
    let s = e.to_string();
    s.strip_prefix(&format!("{file}: "))
        .map(str::to_owned)
        .unwrap_or(s)
}
