//! Status conditions: the standard `meta/v1` [`Condition`], and the condition types and
//! reasons federator writes, as constants shared by the hub and the agent.
//!
//! | object | condition types |
//! |---|---|
//! | `Federation` | `Ready` |
//! | `MemberCluster` | `Reachable`, `Installed`, `BundleAcknowledged`, `Ready` |
//! | `ClusterTrust` (agent) | `Installed`, `BundleInstalled`, `MeshConfig`, `Ready` |

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// `status` of a condition that holds.
pub const TRUE: &str = "True";
/// `status` of a condition that does not hold.
pub const FALSE: &str = "False";

/// Condition types.
pub mod types {
    /// Everything below holds and nothing is wrong.
    pub const READY: &str = "Ready";
    /// The hub reached the member's API server with its credential.
    pub const REACHABLE: &str = "Reachable";
    /// The member runs the cluster CA the hub last signed (hub), or `cacerts` holds the
    /// cluster CA the agent holds (agent).
    pub const INSTALLED: &str = "Installed";
    /// The member installed the current bundle generation and, with an istiod, istiod
    /// publishes it.
    pub const BUNDLE_ACKNOWLEDGED: &str = "BundleAcknowledged";
    /// `root-cert.pem` holds the bundle of `spec.bundle`.
    pub const BUNDLE_INSTALLED: &str = "BundleInstalled";
    /// The mesh config lists the peers' roots.
    pub const MESH_CONFIG: &str = "MeshConfig";
}

/// Condition reasons.
pub mod reasons {
    /// `Ready`: everything holds.
    pub const READY: &str = "Ready";
    /// `Ready`: a condition does not hold.
    pub const NOT_READY: &str = "NotReady";
    /// `Ready`: every condition holds but problems were found.
    pub const PROBLEMS: &str = "Problems";
    /// `Federation` `Ready`: roots, bundle and status are in step with the members.
    pub const SYNCED: &str = "Synced";
    /// `Reachable`.
    pub const REACHABLE: &str = "Reachable";
    /// `Reachable` False.
    pub const UNREACHABLE: &str = "Unreachable";
    /// `Installed`.
    pub const INSTALLED: &str = "Installed";
    /// `Installed` False (hub): the member does not run the last signed CA yet.
    pub const PENDING: &str = "Pending";
    /// `BundleAcknowledged`.
    pub const CURRENT: &str = "Current";
    /// `BundleAcknowledged` False: `cacerts` does not hold the current bundle yet.
    pub const BEHIND: &str = "Behind";
    /// `BundleAcknowledged` False: `cacerts` holds the current bundle but istiod does not
    /// publish it yet (a restart is pending, istiod is down, or it ignored the change).
    pub const ISTIOD_BEHIND: &str = "IstiodBehind";
    /// `Installed` False (agent): writing `cacerts` or restarting istiod failed.
    pub const WRITE_FAILED: &str = "WriteFailed";
    /// `Installed` False (agent): the material cannot be assembled.
    pub const INVALID_MATERIAL: &str = "InvalidMaterial";
    /// `Installed` False (agent): the hub's chain was refused.
    pub const CHAIN_REJECTED: &str = "ChainRejected";
    /// `Installed` False (agent): the hub has not answered the CSR yet.
    pub const WAITING_FOR_SIGNATURE: &str = "WaitingForSignature";
    /// `Installed` False (agent): no CSR yet.
    pub const NO_CSR: &str = "NoCsr";
    /// `BundleInstalled`.
    pub const BUNDLE_INSTALLED: &str = "BundleInstalled";
    /// `BundleInstalled` False: `spec.bundle` cannot be used.
    pub const INVALID_BUNDLE: &str = "InvalidBundle";
    /// `BundleInstalled` False: `root-cert.pem` is not there yet.
    pub const BUNDLE_PENDING: &str = "BundlePending";
    /// `BundleInstalled` False: `cacerts` could not be read or written.
    pub const CACERTS_UNAVAILABLE: &str = "CacertsUnavailable";
    /// `MeshConfig` False: the spec cannot be used.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// `MeshConfig`: there is no mesh config to update.
    pub const NO_MESH_CONFIG: &str = "NoMeshConfig";
    /// `MeshConfig` False: reading, merging or writing it failed.
    pub const MESH_CONFIG_FAILED: &str = "MeshConfigFailed";
    /// `MeshConfig` False: the mesh's trust domain is not the cluster's.
    pub const TRUST_DOMAIN_MISMATCH: &str = "TrustDomainMismatch";
    /// `MeshConfig`: it lists the peers' roots.
    pub const IN_SYNC: &str = "InSync";
    /// `Ready` of a foreign trust domain: the last fetch succeeded.
    pub const FETCHED: &str = "Fetched";
    /// `Ready` False: the endpoint could not be reached or answered with an HTTP error.
    pub const ENDPOINT_UNREACHABLE: &str = "EndpointUnreachable";
    /// `Ready` False: the endpoint's TLS certificate is not the one the profile requires.
    pub const ENDPOINT_NOT_AUTHENTICATED: &str = "EndpointNotAuthenticated";
    /// `Ready` False: the document is not an acceptable SPIFFE bundle for the domain.
    pub const BUNDLE_REFUSED: &str = "BundleRefused";
}

/// Sets a condition in a list, keeping `lastTransitionTime` when the status is unchanged.
/// Returns the new list, sorted by type; equal input gives equal output, so callers can skip
/// no-op writes. `observed_generation` is the `metadata.generation` the condition was
/// computed from.
pub fn set(
    conditions: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: &Time,
    observed_generation: Option<i64>,
) -> Vec<Condition> {
    let status = if ok { TRUE } else { FALSE };
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    out.push(Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time,
        observed_generation,
    });
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The condition of a type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        crate::fields::parse_time(s).unwrap()
    }

    #[test]
    fn keeps_transition_time_when_unchanged() {
        let (t1, t2, t3) = (
            t("2026-01-01T00:00:01Z"),
            t("2026-01-01T00:00:02Z"),
            t("2026-01-01T00:00:03Z"),
        );
        let a = set(&[], "Ready", true, "Ok", "", &t1, Some(1));
        let b = set(&a, "Ready", true, "Ok", "still", &t2, Some(1));
        assert_eq!(b[0].last_transition_time, t1);
        let c = set(&b, "Ready", false, "Broken", "", &t3, Some(2));
        assert_eq!(c[0].last_transition_time, t3);
        assert_eq!(c[0].observed_generation, Some(2));
        assert!(is_true(&b, "Ready") && !is_true(&c, "Ready"));
    }

    #[test]
    fn older_conditions_without_observed_generation_are_read() {
        let c: Condition = serde_json::from_str(
            r#"{"type":"Ready","status":"True","reason":"Ready","message":"","lastTransitionTime":"2026-01-01T00:00:00.5Z"}"#,
        )
        .unwrap();
        assert_eq!(c.observed_generation, None);
    }
}
