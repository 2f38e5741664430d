//! The bundle endpoint's X509-SVID (`serve --bundle-endpoint-profile https_spiffe`): the
//! leader keeps the Secret `federator-system/federator-bundle-endpoint` (`tls.crt`, `tls.key`)
//! holding an SVID for the configured SPIFFE ID, which every replica's bundle endpoint serves.
//!
//! How it is issued, with every backend alike: the hub generates a key and a CSR for a cluster
//! CA named `federator-bundle-endpoint` in the SPIFFE ID's trust domain, has the signer sign it
//! under the root the plan names ([`plan::endpoint_svid`]: the previous root while a rotation
//! still publishes it) with the SVID's lifetime, mints the leaf with that CA (the fields istiod
//! gives a workload certificate: the URI SAN, serverAuth + clientAuth), and forgets the CA key.
//! So with Vault the root key stays in Vault, and what the Secret holds can only ever
//! authenticate the endpoint itself. It is issued again when the plan's root changes, the
//! SPIFFE ID changes, or half its lifetime has passed; otherwise nothing is written.

use std::sync::Arc;
use std::time::Duration;

use federator_api::names;
use federator_api::plumbing;
use federator_core::bundle::TrustBundle;
use federator_core::cacerts::CaCerts;
use federator_core::csr::{CsrInfo, generate_cluster_csr};
use federator_core::identity::{ClusterName, SpiffeId};
use federator_core::key::KeyAlgorithm;
use federator_core::policy::{ClusterCaRequest, SigningPolicy};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{BACKOFF, Shared};
use crate::hub::plan::endpoint_svid::{self as plan, CERT_KEY, KEY_KEY, Verdict};
use crate::hub::trust::signer::{Ask, Signer};
use crate::{Error, Result};

/// The name of the one-use cluster CA that signs the SVID (its Subject's locality).
pub const ENDPOINT_CA_NAME: &str = "federator-bundle-endpoint";

/// Keeps the Secret holding an SVID for `id` of lifetime `ttl`, until the hub's watch ends.
pub async fn run(shared: Arc<Shared>, id: SpiffeId, ttl: Duration) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(shared.client.clone(), names::NAMESPACE);
    let mut desired = shared.desired.subscribe();
    let mut failures = 0u32;
    loop {
        let wait = match sync(&shared, &secrets, &id, ttl).await {
            Ok(wait) => {
                failures = 0;
                wait
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                warn!(error = %e, spiffe_id = %id, "bundle endpoint SVID: not issued; retrying");
                BACKOFF.delay(failures)
            }
        };
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    return Err(Error::Unreachable("the federation controller stopped".into()));
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass: reads the Secret and issues a new SVID if the plan says so. Returns how long
/// until the next look (renewal), unless the plan changes first.
async fn sync(
    shared: &Shared,
    secrets: &Api<Secret>,
    id: &SpiffeId,
    ttl: Duration,
) -> Result<Duration> {
    let td = id.trust_domain();
    let root = shared
        .desired
        .borrow()
        .endpoint_roots
        .get(td.as_str())
        .cloned();
    let Some(root) = root else {
        // No member in that trust domain (yet): no root to issue under. The plan changes
        // when one joins.
        warn!(spiffe_id = %id, "bundle endpoint SVID: {td} is not a trust domain of the federation (no member has it); nothing to issue under");
        return Ok(Duration::from_secs(3600));
    };
    let Some(signer) = shared.signer() else {
        return Ok(BACKOFF.start);
    };
    let held = secrets
        .get_opt(names::BUNDLE_ENDPOINT_SECRET)
        .await
        .map_err(|e| Error::kube("read the bundle endpoint's Secret", e))?;
    let data = held.as_ref().map(plumbing::secret_data);
    let now = OffsetDateTime::now_utc();
    let why = match plan::check(data.as_ref(), id, &root, now) {
        Verdict::Keep { renew_at } => return Ok(until(renew_at, now)),
        Verdict::Issue(why) => why,
    };
    let (chain_pem, key_pem, not_after) = issue(&signer, id, &root, ttl, now).await?;
    let mut secret = Secret {
        metadata: plumbing::metadata(names::BUNDLE_ENDPOINT_SECRET, names::NAMESPACE),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(plumbing::byte_strings(
            [
                (CERT_KEY.to_owned(), chain_pem.into_bytes()),
                (KEY_KEY.to_owned(), key_pem.into_bytes()),
            ]
            .into(),
        )),
        ..Secret::default()
    };
    secret.metadata.annotations = Some(
        [
            (names::SPIFFE_ID_ANNOTATION.to_owned(), id.to_string()),
            (names::ROOT_SHA256_ANNOTATION.to_owned(), root.clone()),
        ]
        .into(),
    );
    plumbing::apply(secrets, &secret, names::HUB_FIELD_MANAGER)
        .await
        .map_err(|e| Error::kube("write the bundle endpoint's Secret", e))?;
    info!(spiffe_id = %id, root_sha256 = %root, not_after = %not_after, "bundle endpoint: issued its X509-SVID ({why})");
    let lifetime = not_after - now;
    Ok(until(now + lifetime / 2, now))
}

fn until(at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(at - now).unwrap_or_default() + Duration::from_secs(1)
}

/// Issues an SVID for `id` under the root `root` (SHA-256) through a one-use cluster CA:
/// (chain PEM, the leaf's key PEM, the leaf's NotAfter).
async fn issue(
    signer: &Signer,
    id: &SpiffeId,
    root: &str,
    ttl: Duration,
    now: OffsetDateTime,
) -> Result<(String, String, OffsetDateTime)> {
    // A valid cluster name by construction (lowercase letters and dashes).
    let name = ClusterName::new(ENDPOINT_CA_NAME)?;
    let td = id.trust_domain().clone();
    let (ca_key, csr_pem) = generate_cluster_csr(&name, &td, KeyAlgorithm::EcdsaP256)?;
    let csr = CsrInfo::parse(csr_pem.as_bytes())?;
    let issued = signer
        .sign(&Ask {
            policy: &SigningPolicy::with_ttl(ttl),
            csr: &csr,
            request: &ClusterCaRequest {
                cluster: name,
                trust_domain: td.clone(),
            },
            now,
            root: Some(root),
        })
        .await?;
    let chain = federator_core::cert::parse_pem_certificates(issued.chain_pem.as_bytes(), "chain")?;
    let mut bundle = TrustBundle::new();
    if let Some(root_der) = chain.last() {
        bundle.add(&td, root_der.clone())?;
    }
    let leaf = CaCerts::assemble(&issued.chain_pem, &ca_key, &bundle)?
        .issue_workload_cert(id, ttl, now)?;
    let not_after = federator_core::cert::validity(&federator_core::cert::parse_der(
        leaf.chain.first().map_or(&[][..], Vec::as_slice),
    )?)
    .1;
    Ok((leaf.chain_pem, leaf.key.to_pkcs8_pem(), not_after))
}
