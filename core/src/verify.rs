//! Chain validation.
//!
//! Two kinds of chains are checked:
//!
//! * **CA paths** ([`verify_ca_path`]): a cluster CA up through intermediates to a root, with
//!   the rules Go's `x509.Certificate.Verify` applies when istiod loads `cacerts` (signatures,
//!   validity of every certificate, CA:TRUE on intermediates, path lengths, EKU compatible with
//!   serverAuth, no SHA-1), plus the `keyCertSign` check Envoy and ztunnel apply to CA
//!   certificates. Path lengths are counted as a workload chain sees them: the cluster CA is
//!   itself an intermediate below its issuers. (webpki cannot check these: it refuses a CA
//!   certificate as an end entity.) Name constraints are not evaluated.
//! * **Workload leaves** ([`verify_workload_chain`], [`verify_svid`]): an X.509-SVID checked
//!   with rustls-webpki, the code rustls runs in mTLS, followed by the SPIFFE leaf rules
//!   (X509-SVID §4.1, §5.2): exactly one URI SAN holding a SPIFFE ID with a path, CA:FALSE, no
//!   keyCertSign or cRLSign.

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use crate::bundle::TrustBundle;
use crate::cert::{self, rfc3339};
use crate::identity::SpiffeId;
use crate::{Error, Result};

struct Node<'a> {
    cert: X509Certificate<'a>,
    der: &'a [u8],
}

impl<'a> Node<'a> {
    fn parse(der: &'a [u8]) -> Result<Self> {
        Ok(Self {
            cert: cert::parse_der(der)?,
            der,
        })
    }

    fn name(&self) -> String {
        self.cert.subject().to_string()
    }

    fn issued(&self, child: &Node<'_>) -> bool {
        self.cert.subject().as_raw() == child.cert.issuer().as_raw()
            && child
                .cert
                .verify_signature(Some(self.cert.public_key()))
                .is_ok()
    }
}

/// Checks time validity, SHA-1 and EKU of one certificate of a CA path.
fn check_common(
    node: &Node<'_>,
    now: OffsetDateTime,
    signed_by_parent: bool,
) -> std::result::Result<(), String> {
    let (nb, na) = cert::validity(&node.cert);
    if now < nb {
        return Err(format!(
            "{} is not valid yet (NotBefore {})",
            node.name(),
            rfc3339(nb)
        ));
    }
    if now > na {
        return Err(format!("{} expired on {}", node.name(), rfc3339(na)));
    }
    if signed_by_parent && cert::is_sha1_signed(&node.cert) {
        return Err(format!(
            "{} is signed with SHA-1, which istiod (Go) refuses",
            node.name()
        ));
    }
    if let Ok(Some(eku)) = node.cert.extended_key_usage() {
        let e = eku.value;
        if !(e.any || e.server_auth) {
            return Err(format!(
                "{} has an extended key usage without serverAuth, which Go's verifier refuses (\"incompatible key usage\"); omit EKU on CA certificates",
                node.name()
            ));
        }
    }
    Ok(())
}

/// Checks that a certificate may act as a CA `depth` levels above the cluster CA in a
/// workload chain (depth 0 is the cluster CA itself).
fn check_ca_role(node: &Node<'_>, depth: usize) -> std::result::Result<(), String> {
    let bc = node
        .cert
        .basic_constraints()
        .map_err(|e| format!("{}: malformed BasicConstraints ({e})", node.name()))?;
    let Some(bc) = bc.filter(|b| b.value.ca) else {
        return Err(format!(
            "{} is not a CA (BasicConstraints CA:TRUE is missing)",
            node.name()
        ));
    };
    if let Some(max) = bc.value.path_len_constraint
        && (max as usize) < depth
    {
        return Err(format!(
            "{} allows {max} CA level(s) below it (pathlen {max}) but the chain puts {depth} below it",
            node.name()
        ));
    }
    match node.cert.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => Ok(()),
        Ok(Some(_)) => Err(format!(
            "{} lacks keyCertSign in its key usage (Envoy and ztunnel reject it)",
            node.name()
        )),
        Ok(None) => Err(format!(
            "{} has no key usage extension; a CA needs keyCertSign",
            node.name()
        )),
        Err(e) => Err(format!("{}: malformed key usage ({e})", node.name())),
    }
}

/// Checks one CA certificate on its own: validity at `now`, no SHA-1, EKU compatible with
/// serverAuth, CA:TRUE with room for `depth` CA levels below it, keyCertSign.
pub fn check_ca_cert(der: &[u8], depth: usize, now: OffsetDateTime) -> Result<()> {
    let node = Node::parse(der)?;
    check_common(&node, now, true)
        .and_then(|()| check_ca_role(&node, depth))
        .map_err(Error::Verification)
}

/// Verifies a CA's own issuer chain as given (issuer first, root last): each certificate is
/// signed by the next, the last is a self-signed root, and every one may act as a CA at its
/// depth. Used when importing an intermediate.
pub fn verify_issuer_chain(
    ca_der: &[u8],
    chain_above: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<()> {
    let ca = Node::parse(ca_der)?;
    let mut child = ca;
    for (i, der) in chain_above.iter().enumerate() {
        let parent = Node::parse(der)?;
        if !parent.issued(&child) {
            return Err(Error::Verification(format!(
                "{} is not signed by the next certificate in the file ({}); order the chain from this CA up to the root",
                child.name(),
                parent.name()
            )));
        }
        check_common(&parent, now, i + 1 < chain_above.len()).map_err(Error::Verification)?;
        // The imported CA sits at depth 1 in a workload chain (cluster CA below it).
        check_ca_role(&parent, i + 2).map_err(Error::Verification)?;
        child = parent;
    }
    if child.cert.subject().as_raw() != child.cert.issuer().as_raw() || !child.issued(&child) {
        return Err(Error::Verification(format!(
            "the chain ends at {}, which is not a self-signed root; append the root",
            child.name()
        )));
    }
    Ok(())
}

/// The most signatures one path search checks, as in Go's `x509` (`maxChainSignatureChecks`):
/// a `cert-chain.pem` of certificates that could all issue one another (same names, one key)
/// would otherwise make the search try every ordering of them.
pub const MAX_SIGNATURE_CHECKS: usize = 100;

/// Builds and verifies a path from `ca_der` (a cluster CA, as in `ca-cert.pem`) through
/// certificates of `pool` (as in `cert-chain.pem`) to one of `roots` (as in `root-cert.pem`),
/// applying the rules in the module documentation. Returns the path, the CA first and the
/// root last. Gives up after [`MAX_SIGNATURE_CHECKS`] signature checks.
pub fn verify_ca_path<'a>(
    ca_der: &'a [u8],
    pool: &'a [Vec<u8>],
    roots: &'a [Vec<u8>],
    now: OffsetDateTime,
) -> Result<Vec<&'a [u8]>> {
    let ca = Node::parse(ca_der)?;
    check_common(&ca, now, true).map_err(Error::Verification)?;
    check_ca_role(&ca, 0).map_err(Error::Verification)?;
    let roots: Vec<Node<'a>> = roots
        .iter()
        .map(|d| Node::parse(d))
        .collect::<Result<_>>()?;
    let pool: Vec<Node<'a>> = pool
        .iter()
        .filter(|d| d.as_slice() != ca_der)
        .map(|d| Node::parse(d))
        .collect::<Result<_>>()?;
    let mut search = PathSearch {
        pool: &pool,
        roots: &roots,
        now,
        best_error: None,
        checks_left: MAX_SIGNATURE_CHECKS,
    };
    let mut path = vec![ca];
    if search.extend(&mut path) {
        return Ok(path.iter().map(|n| n.der).collect());
    }
    if search.checks_left == 0 {
        return Err(Error::Verification(format!(
            "gave up building a path from {} after {MAX_SIGNATURE_CHECKS} signature checks: the chain holds too many certificates that could issue one another",
            path[0].name()
        )));
    }
    Err(Error::Verification(search.best_error.unwrap_or_else(
        || {
            format!(
                "no certificate in the roots or the chain issued {} (its issuer is {})",
                path[0].name(),
                path[0].cert.issuer()
            )
        },
    )))
}

/// A depth-first search for a path to a root, with a budget of signature checks.
struct PathSearch<'s, 'a> {
    pool: &'s [Node<'a>],
    roots: &'s [Node<'a>],
    now: OffsetDateTime,
    best_error: Option<String>,
    checks_left: usize,
}

impl<'a> PathSearch<'_, 'a> {
    /// Whether `parent` issued `child`, spending one check when the names match.
    fn issued(&mut self, parent: &Node<'_>, child: &Node<'_>) -> bool {
        if parent.cert.subject().as_raw() != child.cert.issuer().as_raw() || self.checks_left == 0 {
            return false;
        }
        self.checks_left -= 1;
        parent.issued(child)
    }

    fn extend(&mut self, path: &mut Vec<Node<'a>>) -> bool {
        let depth = path.len();
        if depth > 8 || depth == 0 {
            return false;
        }
        for root in self.roots {
            if self.issued(root, &path[depth - 1]) {
                match check_common(root, self.now, false).and_then(|()| check_ca_role(root, depth))
                {
                    Ok(()) => {
                        path.push(Node {
                            cert: root.cert.clone(),
                            der: root.der,
                        });
                        return true;
                    }
                    Err(e) => self.best_error = Some(e),
                }
            }
        }
        for candidate in self.pool {
            if path.iter().any(|n| n.der == candidate.der)
                || !self.issued(candidate, &path[depth - 1])
            {
                continue;
            }
            if let Err(e) = check_common(candidate, self.now, true)
                .and_then(|()| check_ca_role(candidate, depth))
            {
                self.best_error = Some(e);
                continue;
            }
            path.push(Node {
                cert: candidate.cert.clone(),
                der: candidate.der,
            });
            if self.extend(path) {
                return true;
            }
            path.pop();
        }
        if self.best_error.is_none() && depth > 1 {
            self.best_error = Some(format!(
                "the chain reaches {} but no root in the bundle issued it",
                path[depth - 1].name()
            ));
        }
        false
    }
}

/// Verifies a workload certificate chain (`chain[0]` the leaf, then intermediates) against a
/// flat set of roots, as a sidecar does with `root-cert.pem`, and returns the leaf's SPIFFE ID.
pub fn verify_workload_chain(
    chain: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<SpiffeId> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| Error::Verification("empty certificate chain".into()))?;
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let anchors = root_ders
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Verification(format!("a root cannot be used as a trust anchor: {e}"))
        })?;
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| {
        Error::Verification(format!(
            "the leaf is not a valid end-entity certificate: {e}"
        ))
    })?;
    let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inter,
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(unix)),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| Error::Verification(format!("the workload chain does not verify: {e}")))?;
    svid_leaf_checks(leaf)
}

/// Verifies a workload chain (`chain[0]` the leaf, `chain[1]` its issuing cluster CA, then
/// the rest) whose cluster CA carries the trust-domain URI name constraint, which
/// rustls-webpki refuses outright ([`crate::name_constraint`]): the CA path to one of `roots`
/// under istiod's rules ([`verify_ca_path`]), the leaf's signature by the CA and its validity,
/// the SPIFFE leaf rules, and the constraint as OpenSSL, BoringSSL and Go apply it.
pub fn verify_constrained_workload_chain(
    chain: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<SpiffeId> {
    let [leaf_der, ca_der, above @ ..] = chain else {
        return Err(Error::Verification(
            "the workload chain must hold the leaf and its issuing CA".into(),
        ));
    };
    verify_ca_path(ca_der, above, roots, now)?;
    let (leaf, ca) = (Node::parse(leaf_der)?, Node::parse(ca_der)?);
    if !ca.issued(&leaf) {
        return Err(Error::Verification(format!(
            "the leaf is not signed by {}",
            ca.name()
        )));
    }
    check_common(&leaf, now, true).map_err(Error::Verification)?;
    let id = svid_leaf_checks(leaf_der)?;
    let constraint = crate::name_constraint::read(&ca.cert)?;
    if !crate::name_constraint::permits(&constraint, &id) {
        return Err(Error::Verification(format!(
            "{id} is outside the name constraint of {} ({constraint:?})",
            ca.name()
        )));
    }
    Ok(id)
}

/// Verifies an X.509-SVID chain the SPIFFE way: only the roots of the leaf's own trust domain
/// in `bundle` are trust anchors.
pub fn verify_svid(
    chain: &[Vec<u8>],
    bundle: &TrustBundle,
    now: OffsetDateTime,
) -> Result<SpiffeId> {
    let leaf = chain
        .first()
        .ok_or_else(|| Error::Verification("empty certificate chain".into()))?;
    let id = svid_leaf_checks(leaf)?;
    let roots = bundle.roots_of(id.trust_domain());
    if roots.is_empty() {
        return Err(Error::Verification(format!(
            "the bundle has no roots for trust domain {}",
            id.trust_domain()
        )));
    }
    verify_workload_chain(chain, &roots, now)
}

fn svid_leaf_checks(leaf_der: &[u8]) -> Result<SpiffeId> {
    let leaf = cert::parse_der(leaf_der)?;
    let bad = |why: &str| Error::Verification(format!("not a valid X509-SVID: {why}"));
    let uris = cert::uri_sans(&leaf);
    let [uri] = uris.as_slice() else {
        return Err(bad(&format!(
            "it must have exactly one URI SAN, it has {}",
            uris.len()
        )));
    };
    let id = SpiffeId::parse(uri).map_err(|e| bad(&e.to_string()))?;
    if id.path().is_empty() {
        return Err(bad("a workload SPIFFE ID needs a path"));
    }
    if leaf.is_ca() {
        return Err(bad("the leaf is a CA"));
    }
    if let Ok(Some(ku)) = leaf.key_usage()
        && (ku.value.key_cert_sign() || ku.value.crl_sign())
    {
        return Err(bad("the leaf may sign certificates or CRLs"));
    }
    Ok(id)
}
