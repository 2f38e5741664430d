//! A member's CSR as the hub takes it, before the policy decides: parsed (its signature
//! verified), its digest checked against the one the agent published, and the request the
//! policy decides on — the member's name and trust domain from the hub's own records, never
//! from the CSR.

use federator_api::member::CsrStatus;
use federator_core::csr::CsrInfo;
use federator_core::identity::{ClusterName, TrustDomain};
use federator_core::policy::ClusterCaRequest;

use crate::{Error, Result};

/// The CSR of `status.csr` and what the policy is asked to sign for member `cluster` in
/// `trust_domain`.
pub fn accept(
    csr: &CsrStatus,
    cluster: &str,
    trust_domain: &str,
) -> Result<(CsrInfo, ClusterCaRequest)> {
    let info = CsrInfo::parse(csr.pem.as_bytes())?;
    if info.digest() != csr.digest {
        return Err(Error::Refused(
            "the CSR's digest does not match the CSR".into(),
        ));
    }
    let request = ClusterCaRequest {
        cluster: ClusterName::new(cluster)?,
        trust_domain: TrustDomain::new(trust_domain)?,
    };
    Ok((info, request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_testkit::pki;

    fn status(pem: &str, digest: &str) -> CsrStatus {
        CsrStatus {
            generation: 1,
            pem: pem.into(),
            digest: digest.into(),
        }
    }

    #[test]
    fn takes_a_csr_whose_digest_matches() {
        let (_, pem) = pki::csr("east", "east.local");
        let digest = CsrInfo::parse(pem.as_bytes()).unwrap().digest();
        let (info, request) = accept(&status(&pem, &digest), "east", "east.local").unwrap();
        assert_eq!(info.digest(), digest);
        assert_eq!(request.cluster.as_str(), "east");
        assert_eq!(request.trust_domain.as_str(), "east.local");
    }

    #[test]
    fn refuses_what_it_cannot_take() {
        let (_, pem) = pki::csr("east", "east.local");
        let digest = CsrInfo::parse(pem.as_bytes()).unwrap().digest();
        let err = accept(&status(&pem, &"00".repeat(32)), "east", "east.local").unwrap_err();
        assert!(err.to_string().contains("digest does not match"), "{err}");
        assert_eq!(err.exit_code(), 2);
        assert!(!err.retry_later());
        let err = accept(&status("garbage", &digest), "east", "east.local").unwrap_err();
        assert!(matches!(err, Error::Core(_)), "{err:?}");
        let err = accept(&status(&pem, &digest), "east", "Not Valid").unwrap_err();
        assert!(matches!(err, Error::Core(_)), "{err:?}");
        let err = accept(&status(&pem, &digest), "East!", "east.local").unwrap_err();
        assert!(matches!(err, Error::Core(_)), "{err:?}");
    }
}
