//! Private keys: generation, import and the strength rules.
//!
//! Supported, because istiod, Envoy and ztunnel all handle them: ECDSA P-256 (the default),
//! ECDSA P-384 and RSA of 2048 bits or more. Keys are always written as PKCS#8 PEM
//! (`-----BEGIN PRIVATE KEY-----`). Import also accepts SEC1 (`EC PRIVATE KEY`) and PKCS#1
//! (`RSA PRIVATE KEY`); encrypted keys are refused, as istiod cannot read them either.
//!
//! RSA keys are generated with the RustCrypto `rsa` crate (ring, which signs, cannot generate
//! RSA keys); every key is then loaded into an [`rcgen::KeyPair`] backed by ring for signing.

use std::fmt;
use std::str::FromStr;

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rcgen::{
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, SignatureAlgorithm,
};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::{Error, Result};

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// Named curves and Ed25519 (RFC 5480 §2.1.1.1, RFC 8410 §3), shared with `spiffe`'s JWKs.
pub(crate) const OID_P256: &str = "1.2.840.10045.3.1.7";
pub(crate) const OID_P384: &str = "1.3.132.0.34";
pub(crate) const OID_P521: &str = "1.3.132.0.35";
pub(crate) const OID_ED25519: &str = "1.3.101.112";

/// The smallest RSA modulus federator accepts anywhere (keys, imported CAs, CSRs).
pub const MIN_RSA_BITS: usize = 2048;

/// The key algorithm a user asks for when federator generates a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus (what Istio's `tools/certs` uses).
    Rsa4096,
}

impl KeyAlgorithm {
    /// Every algorithm, in the order the CLI lists them.
    pub const ALL: [KeyAlgorithm; 5] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
    ];

    /// The CLI spelling, e.g. `ecdsa-p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
        }
    }

    /// The kind of key this algorithm produces.
    pub fn kind(self) -> KeyKind {
        match self {
            KeyAlgorithm::EcdsaP256 => KeyKind::EcdsaP256,
            KeyAlgorithm::EcdsaP384 => KeyKind::EcdsaP384,
            KeyAlgorithm::Rsa2048 => KeyKind::Rsa { bits: 2048 },
            KeyAlgorithm::Rsa3072 => KeyKind::Rsa { bits: 3072 },
            KeyAlgorithm::Rsa4096 => KeyKind::Rsa { bits: 4096 },
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                Error::Key(format!(
                    "unknown key algorithm {s:?}: use one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096"
                ))
            })
    }
}

/// The kind of an existing key (private, or public in a certificate or CSR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum KeyKind {
    /// ECDSA P-256.
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus length.
        bits: usize,
    },
}

impl KeyKind {
    /// Classifies a public key, refusing what federator does not support. The error text
    /// names the key ("Ed25519", "RSA 1024 bits", ...), ready to be put in a message.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> std::result::Result<KeyKind, String> {
        let alg = spki.algorithm.algorithm.to_id_string();
        match alg.as_str() {
            OID_RSA_ENCRYPTION => {
                let bits = spki
                    .parsed()
                    .map(|k| k.key_size())
                    .map_err(|e| format!("malformed RSA public key ({e})"))?;
                KeyKind::Rsa { bits }.checked().map_err(|e| e.to_string())
            }
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    OID_P256 => Ok(KeyKind::EcdsaP256),
                    OID_P384 => Ok(KeyKind::EcdsaP384),
                    other => Err(format!(
                        "ECDSA key on curve {other} (only P-256 and P-384 are supported)"
                    )),
                }
            }
            OID_ED25519 => Err("Ed25519 key (istiod signs only with RSA or ECDSA keys)".into()),
            other => Err(format!(
                "key of algorithm {other} (only RSA and ECDSA are supported)"
            )),
        }
    }

    /// Refuses keys that are too weak.
    pub fn checked(self) -> Result<KeyKind> {
        match self {
            KeyKind::Rsa { bits } if bits < MIN_RSA_BITS => Err(Error::Key(format!(
                "RSA key of {bits} bits is too weak: use at least {MIN_RSA_BITS} bits"
            ))),
            other => Ok(other),
        }
    }

    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa { .. } => &PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyKind::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyKind::Rsa { bits } => write!(f, "RSA {bits}"),
        }
    }
}

/// A private key, ready to sign. Its `Debug` output never shows key material.
pub struct PrivateKey {
    kind: KeyKind,
    pair: KeyPair,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kind", &self.kind)
            .field("material", &"<redacted>")
            .finish()
    }
}

impl PrivateKey {
    /// Generates a fresh key.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self> {
        let kind = algorithm.kind();
        let pair = match kind {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => {
                KeyPair::generate_for(kind.signature_algorithm())?
            }
            KeyKind::Rsa { bits } => {
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
                    .map_err(|e| Error::Key(format!("RSA key generation failed: {e}")))?;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| Error::Key(format!("RSA key encoding failed: {e}")))?;
                pair_from_pkcs8(der.as_bytes(), kind)?
            }
        };
        Ok(Self { kind, pair })
    }

    /// Imports a key from PEM: PKCS#8, SEC1 or PKCS#1, unencrypted, one key per input.
    /// `source_name` (a file name, a Secret key) is used in error messages.
    pub fn from_pem(pem_text: &[u8], source_name: &str) -> Result<Self> {
        let block = single_key_block(pem_text, source_name)?;
        let bad = |why: String| Error::Pem {
            source_name: source_name.to_owned(),
            reason: why,
        };
        let contents = block.contents();
        let (kind, pkcs8) = match block.tag() {
            "PRIVATE KEY" => normalize_pkcs8(contents).map_err(bad)?,
            "EC PRIVATE KEY" => {
                if let Ok(k) = p256::SecretKey::from_sec1_der(contents) {
                    (KeyKind::EcdsaP256, ec_pkcs8(k.to_pkcs8_der()).map_err(bad)?)
                } else if let Ok(k) = p384::SecretKey::from_sec1_der(contents) {
                    (KeyKind::EcdsaP384, ec_pkcs8(k.to_pkcs8_der()).map_err(bad)?)
                } else {
                    return Err(bad(
                        "EC PRIVATE KEY is malformed or on a curve other than P-256/P-384".into(),
                    ));
                }
            }
            "RSA PRIVATE KEY" => {
                let key = rsa::RsaPrivateKey::from_pkcs1_der(contents)
                    .map_err(|e| bad(format!("RSA PRIVATE KEY is malformed ({e})")))?;
                let kind = KeyKind::Rsa {
                    bits: key.n().bits(),
                };
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| bad(format!("cannot convert the RSA key to PKCS#8 ({e})")))?;
                (kind, der.as_bytes().to_vec())
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(bad(
                    "the key is encrypted; istiod cannot read encrypted keys either: decrypt it first (openssl pkey -in KEY -out KEY.plain)".into(),
                ));
            }
            other => {
                return Err(bad(format!(
                    "expected a private key, found a {other:?} PEM block"
                )));
            }
        };
        let kind = kind.checked().map_err(|e| bad(e.to_string()))?;
        let pair = pair_from_pkcs8(&pkcs8, kind).map_err(|e| bad(e.to_string()))?;
        Ok(Self { kind, pair })
    }

    /// What kind of key this is.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key as PKCS#8 PEM. This is secret material: write it only to a 0600 file or a
    /// Secret, never to a log.
    pub fn to_pkcs8_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// The raw public key (the contents of the SubjectPublicKeyInfo bit string).
    pub fn public_key_raw(&self) -> &[u8] {
        self.pair.public_key_raw()
    }

    /// Whether a certificate or CSR public key belongs to this private key.
    pub fn matches(&self, spki: &SubjectPublicKeyInfo<'_>) -> bool {
        spki.subject_public_key.data.as_ref() == self.public_key_raw()
    }

    /// The signing key pair, for the certificate builders in this crate.
    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }
}

fn single_key_block(pem_text: &[u8], source_name: &str) -> Result<pem::Pem> {
    let bad = |why: &str| Error::Pem {
        source_name: source_name.to_owned(),
        reason: why.to_owned(),
    };
    let blocks = crate::cert::parse_pem_blocks(pem_text, source_name)?;
    let mut keys = blocks
        .into_iter()
        .filter(|b| b.tag().ends_with("PRIVATE KEY"));
    let key = keys
        .next()
        .ok_or_else(|| bad("no private key PEM block found"))?;
    if keys.next().is_some() {
        return Err(bad("more than one private key found; give exactly one"));
    }
    Ok(key)
}

fn ec_pkcs8(
    der: p256::pkcs8::Result<p256::pkcs8::SecretDocument>,
) -> std::result::Result<Vec<u8>, String> {
    der.map(|d| d.as_bytes().to_vec())
        .map_err(|e| format!("cannot convert the EC key to PKCS#8 ({e})"))
}

/// Reads a PKCS#8 key, classifies it and re-encodes EC keys so they carry their public key
/// (ring refuses PKCS#8 EC keys without one, which some tools write).
fn normalize_pkcs8(der: &[u8]) -> std::result::Result<(KeyKind, Vec<u8>), String> {
    let info = p256::pkcs8::PrivateKeyInfo::try_from(der)
        .map_err(|e| format!("PRIVATE KEY is not valid PKCS#8 ({e})"))?;
    match info.algorithm.oid.to_string().as_str() {
        OID_RSA_ENCRYPTION => {
            let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
                .map_err(|e| format!("RSA PRIVATE KEY is malformed ({e})"))?;
            Ok((
                KeyKind::Rsa {
                    bits: key.n().bits(),
                },
                der.to_vec(),
            ))
        }
        OID_EC_PUBLIC_KEY => {
            let curve = info
                .algorithm
                .parameters_oid()
                .map(|o| o.to_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => {
                    let k = p256::SecretKey::from_pkcs8_der(der)
                        .map_err(|e| format!("malformed P-256 key ({e})"))?;
                    Ok((KeyKind::EcdsaP256, ec_pkcs8(k.to_pkcs8_der())?))
                }
                OID_P384 => {
                    let k = p384::SecretKey::from_pkcs8_der(der)
                        .map_err(|e| format!("malformed P-384 key ({e})"))?;
                    Ok((KeyKind::EcdsaP384, ec_pkcs8(k.to_pkcs8_der())?))
                }
                other => Err(format!(
                    "ECDSA key on curve {other} is not supported (use P-256 or P-384)"
                )),
            }
        }
        OID_ED25519 => {
            Err("Ed25519 keys are not supported: istiod signs only with RSA or ECDSA keys".into())
        }
        other => Err(format!(
            "key algorithm {other} is not supported (use RSA or ECDSA)"
        )),
    }
}

fn pair_from_pkcs8(der: &[u8], kind: KeyKind) -> Result<KeyPair> {
    KeyPair::from_pkcs8_der_and_sign_algo(&der.into(), kind.signature_algorithm())
        .map_err(|e| Error::Key(format!("cannot load the {kind} key ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_algorithm_as_pkcs8() {
        for alg in KeyAlgorithm::ALL {
            let key = PrivateKey::generate(alg).unwrap();
            assert_eq!(key.kind(), alg.kind());
            let pem = key.to_pkcs8_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{alg}");
            let again = PrivateKey::from_pem(pem.as_bytes(), "k").unwrap();
            assert_eq!(again.kind(), alg.kind());
            assert_eq!(again.public_key_raw(), key.public_key_raw());
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.as_str().parse::<KeyAlgorithm>().unwrap(), alg);
        }
        assert!("rsa-1024".parse::<KeyAlgorithm>().is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let pem = key.to_pkcs8_pem();
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        let dbg = format!("{key:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains(&body));
    }

    #[test]
    fn imports_sec1_and_pkcs1() {
        let p256 = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
        let sec1 = p256.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
        let key = PrivateKey::from_pem(sec1.as_bytes(), "sec1").unwrap();
        assert_eq!(key.kind(), KeyKind::EcdsaP256);

        let p384 = p384::SecretKey::random(&mut rsa::rand_core::OsRng);
        let sec1 = p384.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
        assert_eq!(
            PrivateKey::from_pem(sec1.as_bytes(), "sec1")
                .unwrap()
                .kind(),
            KeyKind::EcdsaP384
        );

        use rsa::pkcs1::EncodeRsaPrivateKey;
        let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pkcs1 = rsa.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap();
        let key = PrivateKey::from_pem(pkcs1.as_bytes(), "pkcs1").unwrap();
        assert_eq!(key.kind(), KeyKind::Rsa { bits: 2048 });
    }

    #[test]
    fn refuses_weak_encrypted_and_garbage_keys() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let weak = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pkcs1 = weak.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap();
        let err = PrivateKey::from_pem(pkcs1.as_bytes(), "weak.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("1024 bits is too weak"), "{err}");
        let pkcs8 = weak.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let err = PrivateKey::from_pem(pkcs8.as_bytes(), "weak.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("too weak"), "{err}");

        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = PrivateKey::from_pem(enc.as_bytes(), "enc.pem")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("enc.pem: the key is encrypted"), "{err}");

        let err = PrivateKey::from_pem(b"hello", "garbage.pem")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("garbage.pem: "), "{err}");

        let good = PrivateKey::generate(KeyAlgorithm::EcdsaP256)
            .unwrap()
            .to_pkcs8_pem();
        let truncated = &good[..good.len() / 2];
        let err = PrivateKey::from_pem(truncated.as_bytes(), "t.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");

        let two = format!("{good}{good}");
        let err = PrivateKey::from_pem(two.as_bytes(), "two.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than one private key"), "{err}");

        let ed = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBtWg1bQGkO4k2qL1yUSJ2kZWh8Y1zrjQnIYvYwz7Ghq\n-----END PRIVATE KEY-----\n";
        let err = PrivateKey::from_pem(ed.as_bytes(), "ed.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Ed25519"), "{err}");
    }
}
