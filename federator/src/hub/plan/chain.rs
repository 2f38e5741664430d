//! The signed-CA answer: what the hub writes into `spec.signed` for a CSR once the signer
//! issued its cluster CA — the whole chain, its serial and NotAfter, and the renewal point.

use federator_api::fields;
use federator_api::member::{CsrStatus, SignedCa};
use federator_core::policy::IssuedCa;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Error, Result};

/// When to renew a CA issued at `now` that expires at `not_after`: `percent` (1-99) of its
/// lifetime later.
pub fn renew_after(now: OffsetDateTime, not_after: OffsetDateTime, percent: u8) -> OffsetDateTime {
    let lifetime = not_after - now;
    now + lifetime * (f64::from(percent.clamp(1, 99)) / 100.0)
}

/// The answer to `csr` for the cluster CA `issued` at `now`.
pub fn answer(
    csr: &CsrStatus,
    issued: &IssuedCa,
    renew_at_percent: u8,
    now: OffsetDateTime,
) -> Result<SignedCa> {
    let not_after = OffsetDateTime::parse(&issued.info.not_after, &Rfc3339)
        .map_err(Error::encode("the issued cluster CA's NotAfter"))?;
    let renew = fields::time(renew_after(now, not_after, renew_at_percent));
    Ok(SignedCa::answer(
        &csr.digest,
        csr.generation,
        issued,
        Some(renew),
    )?)
}

/// SHA-256 of the last certificate (the root) of a PEM chain.
pub fn chain_root_sha256(chain_pem: &str) -> Option<String> {
    federator_core::cert::parse_pem_certificates(chain_pem.as_bytes(), "chain")
        .ok()?
        .last()
        .map(|d| federator_core::cert::fingerprint(d))
}

/// Whether the first certificate of a PEM chain (the cluster CA) carries the trust-domain name
/// constraint (`None` when it cannot be read).
pub fn chain_constrained(chain_pem: &str) -> Option<bool> {
    use federator_core::name_constraint::{Constraint, of_chain};
    of_chain(chain_pem).ok().map(|c| c != Constraint::None)
}

/// NotBefore of the first certificate of a chain (the cluster CA).
pub fn chain_not_before(
    chain_pem: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    let der = federator_core::cert::parse_pem_certificates(chain_pem.as_bytes(), "chain")
        .ok()?
        .into_iter()
        .next()?;
    let (not_before, _) =
        federator_core::cert::validity(&federator_core::cert::parse_der(&der).ok()?);
    Some(federator_api::fields::time(not_before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_core::csr::CsrInfo;
    use federator_testkit::pki;

    #[test]
    fn renewal_point_is_a_fraction_of_the_lifetime() {
        let now = OffsetDateTime::now_utc();
        let r = renew_after(now, now + time::Duration::seconds(100), 60);
        assert_eq!(r, now + time::Duration::seconds(60));
        // Out-of-range percentages are clamped rather than renewing never or at once.
        assert_eq!(
            renew_after(now, now + time::Duration::seconds(100), 0),
            now + time::Duration::seconds(1)
        );
        assert_eq!(
            renew_after(now, now + time::Duration::seconds(100), 100),
            now + time::Duration::seconds(99)
        );
    }

    #[test]
    fn the_answer_carries_the_whole_chain_and_the_renewal_point() {
        let root = pki::root("root");
        let (_, pem) = pki::csr("east", "east.local");
        let info = CsrInfo::parse(pem.as_bytes()).unwrap();
        let issued = pki::sign(&root, &info, "east", "east.local");
        let csr = CsrStatus {
            generation: 3,
            pem: pem.clone(),
            digest: info.digest(),
        };
        let now = OffsetDateTime::now_utc();
        let a = answer(&csr, &issued, 50, now).unwrap();
        assert_eq!(
            (a.csr_digest.as_str(), a.generation),
            (csr.digest.as_str(), 3)
        );
        assert_eq!(a.chain_pem, issued.chain_pem);
        assert_eq!(a.serial, issued.info.serial);
        let not_after = fields::offset(&a.not_after);
        let renew = fields::offset(a.renew_after.as_ref().unwrap());
        assert!(renew > now && renew < not_after);
        assert_eq!(
            chain_root_sha256(&a.chain_pem),
            Some(federator_core::cert::fingerprint(root.root_der()))
        );
        assert_eq!(chain_root_sha256("garbage"), None);
    }
}
