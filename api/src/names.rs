//! Well-known names. Both sides use these constants, so they always agree.

/// Namespace of federator's objects, in the hub and in every member.
pub const NAMESPACE: &str = "federator-system";
/// Name of the single `ClusterTrust` object in a member.
pub const CLUSTER_TRUST: &str = "local";
/// Name of the single `Federation` object in the hub.
pub const FEDERATION: &str = "default";
/// ServiceAccount of the agent in a member.
pub const AGENT_SERVICE_ACCOUNT: &str = "federator-agent";
/// The agent image this project's build produces (`scripts/images`, or `docker build --target
/// cluster-agent`) and `federator join`'s default `--agent-image`. The `localhost/` registry is
/// never pulled from a public registry: load the image into the cluster's nodes (`kind load
/// image-archive`, `ctr -n k8s.io images import`), or push it to your registry and pass
/// `--agent-image`.
pub const AGENT_IMAGE: &str = concat!(
    "localhost/federator/cluster-agent:",
    env!("CARGO_PKG_VERSION")
);
/// The hub image this project's build produces (`federator serve` in a Deployment).
pub const FEDERATOR_IMAGE: &str =
    concat!("localhost/federator/federator:", env!("CARGO_PKG_VERSION"));
/// ServiceAccount of the hub's identity in a member.
pub const HUB_SERVICE_ACCOUNT: &str = "federator-hub";
/// ServiceAccount of the member's reader identity: what the other members' istiods use to
/// discover this cluster's endpoints (remote secrets).
pub const READER_SERVICE_ACCOUNT: &str = "federator-reader";
/// Secret in a member's `federator-system` through which the hub hands the agent the peers'
/// reader kubeconfigs (one data key per peer cluster). The hub may patch it, by name, and
/// nothing else among the member's Secrets; the agent reads it and writes the remote secrets.
pub const PEERS_SECRET: &str = "federator-peers";
/// Deployment of the agent in a member.
pub const AGENT_DEPLOYMENT: &str = "federator-agent";
/// Secret in a member holding the agent's pending key and CSR (the hub cannot read it).
pub const AGENT_KEY_SECRET: &str = "federator-cluster-ca";
/// Secret in the hub holding the local or imported root material.
pub const ROOTS_SECRET: &str = "federator-roots";
/// Prefix of the Secret in the hub holding a member's credential (`<prefix><cluster>`).
pub const MEMBER_CREDENTIAL_PREFIX: &str = "federator-member-";
/// Key of the kubeconfig in a member credential Secret.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// Secret in the hub holding the bundle endpoint's X509-SVID (`tls.crt`, `tls.key`) for
/// `https_spiffe`; every replica serves with it.
pub const BUNDLE_ENDPOINT_SECRET: &str = "federator-bundle-endpoint";
/// Lease used for leader election among hub replicas.
pub const LEADER_LEASE: &str = "federator-leader";

/// Istio's namespace.
pub const ISTIO_NAMESPACE: &str = "istio-system";
/// Istio's plug-in CA Secret.
pub const CACERTS_SECRET: &str = "cacerts";
/// Istio's mesh config ConfigMap, and its key.
pub const ISTIO_CONFIGMAP: &str = "istio";
/// Key of the mesh config in the `istio` ConfigMap.
pub const MESH_KEY: &str = "mesh";
/// istiod's Deployment.
pub const ISTIOD_DEPLOYMENT: &str = "istiod";
/// ztunnel's DaemonSet (Istio's ambient mode; its chart installs it under this name in
/// `istio-system`). The agent reads it only to refuse a cluster CA with the trust-domain name
/// constraint, which ztunnel's verifier rejects.
pub const ZTUNNEL_DAEMONSET: &str = "ztunnel";
/// The ConfigMap istiod writes into every namespace with the roots it serves (key
/// `root-cert.pem`); the agent reads the one in `istio-system` to see what istiod took.
pub const ISTIO_ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
/// Pod template annotation the agent bumps to make the Deployment controller restart istiod
/// (the same mechanism as `kubectl rollout restart`).
pub const RESTARTED_AT_ANNOTATION: &str = "federator.io/restartedAt";
/// Annotation on the `istio` ConfigMap listing the `caCertificates` entries the agent manages.
pub const MANAGED_CA_CERTIFICATES_ANNOTATION: &str = "federator.io/managed-ca-certificates";
/// Annotation on a `MemberCluster`: re-issue the cluster CA with this serial now (`federator
/// renew cluster`); once the member runs on another CA it asks for nothing.
pub const REISSUE_ANNOTATION: &str = "federator.io/reissue-serial";
/// Annotation on the bundle endpoint's SVID Secret: the SPIFFE ID it was issued for.
pub const SPIFFE_ID_ANNOTATION: &str = "federator.io/spiffe-id";
/// Annotation on the bundle endpoint's SVID Secret: the root it chains to (SHA-256).
pub const ROOT_SHA256_ANNOTATION: &str = "federator.io/root-sha256";

/// Server-side apply field manager of the hub.
pub const HUB_FIELD_MANAGER: &str = "federator";
/// Server-side apply field manager of the agent.
pub const AGENT_FIELD_MANAGER: &str = "cluster-agent";
/// Label set on every object federator creates.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "federator");

/// Prefix of the Secret in the hub holding a member's reader kubeconfig (`<prefix><cluster>`),
/// the one the hub hands the other members.
pub const READER_CREDENTIAL_PREFIX: &str = "federator-reader-";

/// Name of the hub Secret holding a member's reader kubeconfig.
pub fn reader_credential_secret(cluster: &str) -> String {
    format!("{READER_CREDENTIAL_PREFIX}{cluster}")
}

/// Name of the hub Secret holding a member's credential.
pub fn member_credential_secret(cluster: &str) -> String {
    format!("{MEMBER_CREDENTIAL_PREFIX}{cluster}")
}

/// Name of the `ForeignTrustDomain` of a trust domain: the trust domain itself when it is a
/// valid object name (DNS-1123 subdomain), else `td-` and 16 hex digits of its SHA-256.
pub fn foreign_trust_domain(trust_domain: &str) -> String {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if trust_domain.len() <= 253 && trust_domain.split('.').all(label_ok) {
        return trust_domain.to_owned();
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(trust_domain.as_bytes());
    format!("td-{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    #[test]
    fn foreign_trust_domain_names_are_object_names() {
        assert_eq!(
            super::foreign_trust_domain("spire.example"),
            "spire.example"
        );
        let odd = super::foreign_trust_domain("my_domain");
        assert!(odd.starts_with("td-") && odd.len() == 19, "{odd}");
        assert_ne!(odd, super::foreign_trust_domain("my_domaim"));
    }
}
