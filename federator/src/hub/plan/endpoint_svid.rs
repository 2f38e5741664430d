//! The bundle endpoint's X509-SVID (`serve --bundle-endpoint-profile https_spiffe`, SPIFFE
//! Federation §5.2.2): whether the SVID the hub holds can still be served, or the leader must
//! issue another.
//!
//! The SVID is kept while it is for the configured SPIFFE ID, chains to the root the plan
//! names for its trust domain ([`super::federation::Desired::endpoint_roots`]), its key matches
//! and less than half its lifetime has passed. Peers authenticate the endpoint with the bundle
//! they last fetched from it, so during a root rotation the SVID stays under the previous root
//! (which every peer holds) for as long as the federation publishes it, and moves to the new
//! root when the old one leaves the bundle; by then every peer polling at the refresh hint has
//! fetched a bundle holding both.

use std::collections::BTreeMap;

use federator_core::bundle::TrustBundle;
use federator_core::cert;
use federator_core::identity::SpiffeId;
use federator_core::key::PrivateKey;
use time::OffsetDateTime;

/// The Secret's key of the chain (leaf first, then up to the root, PEM).
pub const CERT_KEY: &str = "tls.crt";
/// The Secret's key of the leaf's private key (PKCS#8 PEM).
pub const KEY_KEY: &str = "tls.key";

/// What to do with the SVID the hub holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; look again at `renew_at` (half its lifetime).
    Keep {
        /// When half its lifetime has passed.
        renew_at: OffsetDateTime,
    },
    /// Issue a new one, for this reason.
    Issue(String),
}

/// Decides about the SVID in `data` (the Secret's data; `None`: no Secret) for `id`, which must
/// chain to the root whose SHA-256 is `root_sha256`, at `now`.
pub fn check(
    data: Option<&BTreeMap<String, Vec<u8>>>,
    id: &SpiffeId,
    root_sha256: &str,
    now: OffsetDateTime,
) -> Verdict {
    let issue = |why: &str| Verdict::Issue(why.to_owned());
    let Some(data) = data else {
        return issue("there is none yet");
    };
    let (Some(chain_pem), Some(key_pem)) = (data.get(CERT_KEY), data.get(KEY_KEY)) else {
        return issue("the Secret lacks tls.crt or tls.key");
    };
    let Ok(chain) = cert::parse_pem_certificates(chain_pem, CERT_KEY) else {
        return issue("tls.crt is not a PEM certificate chain");
    };
    let (Some(leaf), Some(root)) = (chain.first(), chain.last()) else {
        return issue("tls.crt holds no certificate");
    };
    if cert::fingerprint(root) != root_sha256 {
        return issue("it chains to another root than the one the bundle endpoint signs under now");
    }
    let mut bundle = TrustBundle::new();
    if bundle.add(id.trust_domain(), root.clone()).is_err() {
        return issue("its root is not a usable trust anchor");
    }
    match federator_core::verify::verify_svid(&chain, &bundle, now) {
        Ok(got) if &got == id => {}
        Ok(got) => return issue(&format!("it is for {got}, not {id}")),
        Err(_) => return issue("it does not verify (expired, or not a valid X509-SVID)"),
    }
    let Ok(leaf_cert) = cert::parse_der(leaf) else {
        return issue("its leaf does not parse");
    };
    match PrivateKey::from_pem(key_pem, KEY_KEY) {
        Ok(k) if k.matches(leaf_cert.public_key()) => {}
        _ => return issue("tls.key does not match the certificate"),
    }
    let (not_before, not_after) = cert::validity(&leaf_cert);
    let renew_at = not_before + (not_after - not_before) / 2;
    if now >= renew_at {
        return issue("half its lifetime has passed");
    }
    Verdict::Keep { renew_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use federator_core::ca::{IssuingCa, RootOptions};
    use federator_core::cacerts::CaCerts;
    use federator_core::key::KeyAlgorithm;
    use federator_core::policy::{ClusterCaRequest, SigningPolicy};
    use std::time::Duration;

    fn root(td: &str) -> IssuingCa {
        root_at(td, OffsetDateTime::now_utc())
    }

    fn root_at(td: &str, at: OffsetDateTime) -> IssuingCa {
        IssuingCa::create_root(
            &RootOptions {
                common_name: format!("{td} root"),
                ..Default::default()
            },
            at,
        )
        .unwrap()
    }

    /// An SVID for `id` under `root`, valid for `ttl` from `now`, as the Secret's data.
    fn svid(
        root: &IssuingCa,
        id: &SpiffeId,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> BTreeMap<String, Vec<u8>> {
        let name = federator_core::identity::ClusterName::new("bundle-endpoint").unwrap();
        let td = id.trust_domain().clone();
        let (key, csr) =
            federator_core::csr::generate_cluster_csr(&name, &td, KeyAlgorithm::EcdsaP256).unwrap();
        let csr = federator_core::csr::CsrInfo::parse(csr.as_bytes()).unwrap();
        let issued = SigningPolicy::with_ttl(ttl)
            .sign(
                root,
                &csr,
                &ClusterCaRequest {
                    cluster: name,
                    trust_domain: td.clone(),
                },
                now,
            )
            .unwrap();
        let mut bundle = TrustBundle::new();
        bundle.add(&td, root.root_der().to_vec()).unwrap();
        let w = CaCerts::assemble(&issued.chain_pem, &key, &bundle)
            .unwrap()
            .issue_workload_cert(id, ttl, now)
            .unwrap();
        BTreeMap::from([
            (CERT_KEY.to_owned(), w.chain_pem.into_bytes()),
            (KEY_KEY.to_owned(), w.key.to_pkcs8_pem().into_bytes()),
        ])
    }

    #[test]
    fn a_fresh_svid_for_the_id_under_the_named_root_is_kept_until_half_its_lifetime() {
        let now = OffsetDateTime::now_utc();
        let r = root("east.example");
        let id = SpiffeId::parse("spiffe://east.example/federator/bundle-endpoint").unwrap();
        let fp = cert::fingerprint(r.root_der());
        let data = svid(&r, &id, Duration::from_secs(3600), now);
        let Verdict::Keep { renew_at } = check(Some(&data), &id, &fp, now) else {
            panic!("{:?}", check(Some(&data), &id, &fp, now));
        };
        // NotBefore is backdated two minutes: half of 62 minutes from then.
        let expected = now - time::Duration::minutes(2) + time::Duration::minutes(31);
        assert!(
            (renew_at - expected).abs() < time::Duration::seconds(2),
            "{renew_at}"
        );
        assert!(matches!(
            check(Some(&data), &id, &fp, renew_at),
            Verdict::Issue(why) if why.contains("half its lifetime")
        ));
    }

    #[test]
    fn anything_else_is_issued_again_with_the_reason() {
        let now = OffsetDateTime::now_utc();
        let (a, b) = (root("east.example"), root("east.example"));
        let id = SpiffeId::parse("spiffe://east.example/federator/bundle-endpoint").unwrap();
        let other = SpiffeId::parse("spiffe://east.example/other").unwrap();
        let fp_a = cert::fingerprint(a.root_der());
        let fp_b = cert::fingerprint(b.root_der());
        let good = svid(&a, &id, Duration::from_secs(3600), now);
        let why = |d: Option<&BTreeMap<String, Vec<u8>>>, id: &SpiffeId, fp: &str| match check(
            d, id, fp, now,
        ) {
            Verdict::Issue(w) => w,
            keep => panic!("kept: {keep:?}"),
        };
        assert!(why(None, &id, &fp_a).contains("none yet"));
        // The plan moved to another root (a rotation).
        assert!(why(Some(&good), &id, &fp_b).contains("another root"));
        // The configured ID changed.
        assert!(why(Some(&good), &other, &fp_a).contains("not spiffe://east.example/other"));
        // A key that is not the certificate's.
        let mut wrong_key = good.clone();
        wrong_key.insert(
            KEY_KEY.into(),
            PrivateKey::generate(KeyAlgorithm::EcdsaP256)
                .unwrap()
                .to_pkcs8_pem()
                .into_bytes(),
        );
        assert!(why(Some(&wrong_key), &id, &fp_a).contains("does not match"));
        // Garbage and missing keys.
        let mut garbage = good.clone();
        garbage.insert(CERT_KEY.into(), b"not pem".to_vec());
        assert!(why(Some(&garbage), &id, &fp_a).contains("not a PEM"));
        let mut missing = good.clone();
        missing.remove(KEY_KEY);
        assert!(why(Some(&missing), &id, &fp_a).contains("lacks"));
        // Expired (issued an hour ago for a minute, under a root of two hours ago).
        let then = now - time::Duration::hours(2);
        let c = root_at("east.example", then);
        let old = svid(&c, &id, Duration::from_secs(60), then);
        let fp_c = cert::fingerprint(c.root_der());
        assert!(why(Some(&old), &id, &fp_c).contains("does not verify"));
    }
}
