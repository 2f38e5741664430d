//! SPIFFE bundle documents: reading one fetched from a foreign trust domain, and the JWK of
//! a root as federator publishes it.
//!
//! A SPIFFE bundle is a JWK set (SPIFFE Trust Domain and Bundle, §4) with `spiffe_sequence`
//! (§4.1.1) and `spiffe_refresh_hint` (§4.1.2). Each X.509 authority is one JWK with
//! `use: x509-svid` and exactly one CA certificate in `x5c` (X509-SVID, §6); each JWT
//! authority a JWK with `use: jwt-svid` and a `kid` (JWT-SVID, §6).
//!
//! [`parse_bundle`] is the one entry point for untrusted bytes (what a bundle endpoint
//! served, or a bootstrap file). It is as strict as SPIRE, the reference implementation
//! (`pkg/common/bundleutil.Decode` and go-jose's JWK decoding), so that federator and a SPIRE
//! server polling the same endpoint never disagree on a foreign trust domain's roots; where
//! the specification asks a consumer to skip an element, it is skipped and said so:
//!
//! | the document | |
//! |---|---|
//! | larger than [`MAX_BUNDLE_BYTES`], more than [`MAX_KEYS`] keys, not a JSON object, no `keys` array, a field twice | refused |
//! | `spiffe_sequence` / `spiffe_refresh_hint` not a non-negative integer | refused |
//! | a key without `use` (the publisher broke a MUST; SPIRE refuses it too) | refused |
//! | a key with an unknown `use` or, for `x509-svid`, an unknown `kty` (§4.2.1, §4.2.2: ignore) | skipped, noted |
//! | `x509-svid`: `x5c` without exactly one certificate, not base64 DER, not a CA certificate, key parameters that are not the certificate's key, a SPIFFE ID of another trust domain | refused |
//! | `jwt-svid` without `kid` (JWT-SVID §6.1; SPIRE refuses it) | refused |
//!
//! An empty key set is valid: the trust domain revoked its keys, and its SVIDs must no longer
//! be trusted (§4.1.3). What is trusted from a bundle is the set of its X.509 CA
//! certificates; nothing of one trust domain's bundle is ever merged into another's
//! (SPIFFE Federation §4.2).

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use x509_parser::public_key::PublicKey;

use crate::cert;
use crate::identity::{SpiffeId, TrustDomain};
use crate::key::{OID_ED25519, OID_P256, OID_P384, OID_P521};

/// The largest document accepted (a bundle of 128 RSA-4096 roots is about 400 KiB).
pub const MAX_BUNDLE_BYTES: usize = 512 * 1024;
/// The most keys accepted in one bundle.
pub const MAX_KEYS: usize = 128;

/// `use` of an X.509 authority.
pub const X509_SVID: &str = "x509-svid";
/// `use` of a JWT authority.
pub const JWT_SVID: &str = "jwt-svid";

/// Why a bundle document was refused. Each message names the element and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The document is larger than [`MAX_BUNDLE_BYTES`].
    #[error("the document is {size} bytes or more; a SPIFFE bundle is refused above {max} bytes")]
    TooLarge {
        /// Its size (at least).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a JSON document of the bundle's shape.
    #[error("not a SPIFFE bundle (a JSON object with a \"keys\" array): {0}")]
    Malformed(String),
    /// More than [`MAX_KEYS`] keys.
    #[error("the bundle has {0} keys; at most {MAX_KEYS} are accepted")]
    TooManyKeys(usize),
    /// One key breaks a rule.
    #[error("key {index}: {reason}")]
    Key {
        /// Its index in `keys`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// An X.509 authority that names another trust domain.
    #[error(
        "key {index}: the certificate {subject} is a CA of trust domain {found}, not of {expected}"
    )]
    WrongTrustDomain {
        /// Its index in `keys`.
        index: usize,
        /// Its subject.
        subject: String,
        /// The trust domain its SPIFFE ID names.
        found: String,
        /// The trust domain the bundle was fetched for.
        expected: String,
    },
}

/// A bundle of a foreign trust domain, as read from its document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignBundle {
    /// The trust domain it was read for.
    pub trust_domain: TrustDomain,
    /// The X.509 authorities (DER CA certificates), in document order, each once.
    pub x509_authorities: Vec<Vec<u8>>,
    /// The key IDs of the JWT authorities (not used by Istio; counted for the status).
    pub jwt_authorities: Vec<String>,
    /// `spiffe_sequence`, if set.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint`, if set.
    pub refresh_hint: Option<Duration>,
    /// Elements skipped as the specification asks (unknown `use` or key type), one sentence
    /// each.
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
    #[serde(default)]
    spiffe_sequence: Option<serde_json::Value>,
    #[serde(default)]
    spiffe_refresh_hint: Option<serde_json::Value>,
}

/// The members of a JWK federator reads. Unknown members are ignored; a member given twice
/// is an error (serde refuses duplicate fields).
#[derive(Deserialize)]
struct JwkDoc {
    #[serde(rename = "use")]
    use_: Option<serde_json::Value>,
    kty: Option<serde_json::Value>,
    kid: Option<serde_json::Value>,
    x5c: Option<serde_json::Value>,
    crv: Option<serde_json::Value>,
    x: Option<serde_json::Value>,
    y: Option<serde_json::Value>,
    n: Option<serde_json::Value>,
    e: Option<serde_json::Value>,
}

fn non_negative(v: &serde_json::Value, name: &str) -> Result<u64, BundleError> {
    v.as_u64().ok_or_else(|| {
        BundleError::Malformed(format!("{name} must be a non-negative integer, not {v}"))
    })
}

/// Reads a SPIFFE bundle document fetched for `trust_domain` (see the module documentation
/// for the rules). Pure: the caller supplies the bytes, nothing is fetched or checked against
/// the clock.
pub fn parse_bundle(data: &[u8], trust_domain: &TrustDomain) -> Result<ForeignBundle, BundleError> {
    if data.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            size: data.len(),
            max: MAX_BUNDLE_BYTES,
        });
    }
    let doc: Document =
        serde_json::from_slice(data).map_err(|e| BundleError::Malformed(e.to_string()))?;
    if doc.keys.len() > MAX_KEYS {
        return Err(BundleError::TooManyKeys(doc.keys.len()));
    }
    let sequence = doc
        .spiffe_sequence
        .as_ref()
        .filter(|v| !v.is_null())
        .map(|v| non_negative(v, "spiffe_sequence"))
        .transpose()?;
    let refresh_hint = doc
        .spiffe_refresh_hint
        .as_ref()
        .filter(|v| !v.is_null())
        .map(|v| non_negative(v, "spiffe_refresh_hint").map(Duration::from_secs))
        .transpose()?;
    let mut out = ForeignBundle {
        trust_domain: trust_domain.clone(),
        x509_authorities: Vec::new(),
        jwt_authorities: Vec::new(),
        sequence,
        refresh_hint,
        skipped: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for (index, value) in doc.keys.into_iter().enumerate() {
        let bad = |reason: String| BundleError::Key { index, reason };
        if !value.is_object() {
            return Err(bad(format!("a JWK must be a JSON object, not {value}")));
        }
        let jwk: JwkDoc = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let text = |v: &Option<serde_json::Value>, name: &str| -> Result<Option<String>, _> {
            match v {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(format!("\"{name}\" must be a string, not {other}"))),
            }
        };
        let use_ = text(&jwk.use_, "use")?.ok_or_else(|| {
            bad("no \"use\": every key of a SPIFFE bundle must say what it authenticates (x509-svid or jwt-svid)".into())
        })?;
        let kty = text(&jwk.kty, "kty")?;
        match use_.as_str() {
            X509_SVID => {
                let Some(kty) = kty else {
                    return Err(bad("no \"kty\" (RFC 7517 §4.1)".into()));
                };
                if !matches!(kty.as_str(), "EC" | "RSA" | "OKP") {
                    out.skipped.push(format!(
                        "key {index}: x509-svid key of unknown type {kty:?} skipped"
                    ));
                    continue;
                }
                let der = x509_authority(&jwk, &kty).map_err(bad)?;
                if let Some((found, subject)) = other_trust_domain(&der, trust_domain) {
                    return Err(BundleError::WrongTrustDomain {
                        index,
                        subject,
                        found,
                        expected: trust_domain.to_string(),
                    });
                }
                if seen.insert(cert::fingerprint(&der)) {
                    out.x509_authorities.push(der);
                }
            }
            JWT_SVID => {
                let kid = text(&jwk.kid, "kid")?
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        bad("a jwt-svid key must have a \"kid\" (JWT-SVID §6.1)".into())
                    })?;
                if kty.is_none() {
                    return Err(bad("no \"kty\" (RFC 7517 §4.1)".into()));
                }
                out.jwt_authorities.push(kid);
            }
            other => out
                .skipped
                .push(format!("key {index}: unknown use {other:?} skipped")),
        }
    }
    Ok(out)
}

/// The CA certificate of an `x509-svid` JWK, checked against its key parameters.
fn x509_authority(jwk: &JwkDoc, kty: &str) -> Result<Vec<u8>, String> {
    let certs = match &jwk.x5c {
        Some(serde_json::Value::Array(a)) => a,
        None | Some(serde_json::Value::Null) => {
            return Err("an x509-svid key must carry its CA certificate in \"x5c\"".into());
        }
        Some(other) => return Err(format!("\"x5c\" must be an array, not {other}")),
    };
    let [only] = certs.as_slice() else {
        return Err(format!(
            "\"x5c\" must hold exactly one CA certificate (X509-SVID §6.1), it holds {}",
            certs.len()
        ));
    };
    let b64 = only
        .as_str()
        .ok_or_else(|| "\"x5c\" must hold base64 strings".to_owned())?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("\"x5c\" is not base64 DER (RFC 7517 §4.7): {e}"))?;
    let parsed = cert::parse_der(&der).map_err(|e| format!("\"x5c\": {e}"))?;
    let subject = parsed.subject().to_string();
    if !parsed.is_ca() {
        return Err(format!(
            "{subject} is not a CA certificate: only CA certificates can be X.509 authorities"
        ));
    }
    if let Ok(Some(ku)) = parsed.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(format!(
            "{subject} may not sign certificates (no keyCertSign): it cannot be an X.509 authority"
        ));
    }
    let key = public_jwk(&der)?;
    let given = JwkKey {
        kty: kty.to_owned(),
        crv: string_of(&jwk.crv),
        x: string_of(&jwk.x),
        y: string_of(&jwk.y),
        n: string_of(&jwk.n),
        e: string_of(&jwk.e),
    };
    if given != key {
        return Err(format!(
            "its key parameters are not the public key of its certificate {subject}"
        ));
    }
    Ok(der)
}

fn string_of(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().and_then(|v| v.as_str()).map(str::to_owned)
}

/// The trust domain and subject of a certificate whose SPIFFE ID names a trust domain other
/// than `expected`.
fn other_trust_domain(der: &[u8], expected: &TrustDomain) -> Option<(String, String)> {
    let parsed = cert::parse_der(der).ok()?;
    cert::uri_sans(&parsed)
        .iter()
        .filter(|u| u.starts_with("spiffe://"))
        .find_map(|u| match SpiffeId::parse(u) {
            Ok(id) if id.trust_domain() == expected => None,
            Ok(id) => Some(id.trust_domain().to_string()),
            Err(_) => Some(u.clone()),
        })
        .map(|found| (found, parsed.subject().to_string()))
}

/// The public parameters of a key as a JWK carries them (RFC 7518 §6, RFC 8037 §2), base64url
/// without padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwkKey {
    /// `EC`, `RSA` or `OKP`.
    pub kty: String,
    /// The curve (`P-256`, `P-384`, `P-521`, `Ed25519`).
    pub crv: Option<String>,
    /// EC x coordinate, or the Ed25519 public key.
    pub x: Option<String>,
    /// EC y coordinate.
    pub y: Option<String>,
    /// RSA modulus.
    pub n: Option<String>,
    /// RSA exponent.
    pub e: Option<String>,
}

/// The JWK parameters of a certificate's public key: EC keys on P-256, P-384 and P-521 (an
/// uncompressed point of the curve's size), RSA, and Ed25519.
pub fn public_jwk(cert_der: &[u8]) -> Result<JwkKey, String> {
    let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let parsed = cert::parse_der(cert_der).map_err(|e| e.to_string())?;
    let spki = parsed.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    if alg == OID_ED25519 {
        let raw = spki.subject_public_key.data.as_ref();
        if raw.len() != 32 {
            return Err(format!("malformed Ed25519 key ({} bytes)", raw.len()));
        }
        return Ok(JwkKey {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(b64url(raw)),
            y: None,
            n: None,
            e: None,
        });
    }
    match spki.parsed() {
        Ok(PublicKey::EC(point)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            let (crv, size) = match curve.as_str() {
                OID_P256 => ("P-256", 32),
                OID_P384 => ("P-384", 48),
                OID_P521 => ("P-521", 66),
                other => return Err(format!("EC key on unsupported curve {other}")),
            };
            let data = point.data();
            if data.len() != 1 + 2 * size || data[0] != 0x04 {
                return Err(format!(
                    "its ECDSA {crv} public key is not an uncompressed point ({} bytes, not {})",
                    data.len(),
                    1 + 2 * size
                ));
            }
            Ok(JwkKey {
                kty: "EC".into(),
                crv: Some(crv.into()),
                x: Some(b64url(&data[1..=size])),
                y: Some(b64url(&data[1 + size..])),
                n: None,
                e: None,
            })
        }
        Ok(PublicKey::RSA(rsa)) => {
            let strip =
                |b: &[u8]| -> Vec<u8> { b.iter().skip_while(|x| **x == 0).copied().collect() };
            let (n, e) = (strip(rsa.modulus), strip(rsa.exponent));
            if n.is_empty() || e.is_empty() {
                return Err("malformed RSA public key".into());
            }
            Ok(JwkKey {
                kty: "RSA".into(),
                crv: None,
                x: None,
                y: None,
                n: Some(b64url(&n)),
                e: Some(b64url(&e)),
            })
        }
        Ok(_) => Err(format!("unsupported public key algorithm {alg}")),
        Err(e) => Err(format!("unreadable public key ({e})")),
    }
}

/// Reads trust anchors a user supplies for a trust domain (`--bootstrap-bundle`): a SPIFFE
/// bundle document ([`parse_bundle`]) or PEM CA certificates (checked the same way: CA
/// certificates of that trust domain only). Returns the DER certificates.
pub fn parse_anchors(data: &[u8], trust_domain: &TrustDomain) -> Result<Vec<Vec<u8>>, BundleError> {
    if data.trim_ascii_start().starts_with(b"{") {
        return Ok(parse_bundle(data, trust_domain)?.x509_authorities);
    }
    if data.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            size: data.len(),
            max: MAX_BUNDLE_BYTES,
        });
    }
    let ders = cert::parse_pem_certificates(data, "bundle")
        .map_err(|e| BundleError::Malformed(format!("neither a SPIFFE bundle nor PEM: {e}")))?;
    for (index, der) in ders.iter().enumerate() {
        let parsed = cert::parse_der(der).map_err(|e| BundleError::Key {
            index,
            reason: e.to_string(),
        })?;
        if !parsed.is_ca() {
            return Err(BundleError::Key {
                index,
                reason: format!("{} is not a CA certificate", parsed.subject()),
            });
        }
        if let Some((found, subject)) = other_trust_domain(der, trust_domain) {
            return Err(BundleError::WrongTrustDomain {
                index,
                subject,
                found,
                expected: trust_domain.to_string(),
            });
        }
    }
    Ok(ders)
}
