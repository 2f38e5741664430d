//! # federator-api
//!
//! The Kubernetes API shared by the hub (`federator`) and the agent (`cluster-agent`): the
//! custom resources, the well-known names, and the RBAC each side needs. The trust logic
//! itself lives in `federator-core`, which knows nothing of Kubernetes.
//!
//! | module | what it holds |
//! |---|---|
//! | [`hub`] | resources in the hub cluster: [`hub::Federation`], [`hub::MemberCluster`] |
//! | [`member`] | the exchange object in each member: [`member::ClusterTrust`] |
//! | [`names`] | namespaces, object names, field managers, annotations |
//! | [`rbac`] | the Roles the agent and the hub's member credential get |
//! | [`agent`] | the agent's Deployment, as `join` installs it |
//! | [`condition`] | status conditions |
//!
//! ## The exchange (one `ClusterTrust` named `local` in each member's `federator-system`)
//!
//! * The hub writes `spec` (with its least-privilege credential): the trust bundle and its
//!   generation, the CSR generation it asks for, and the signed chain for the last CSR.
//! * The agent writes `status` (the `/status` subresource): its CSR (public key only), what it
//!   installed, istiod's state, conditions.
//! * The cluster CA key stays in a member Secret the hub's credential cannot read.

#![forbid(unsafe_code)]

pub mod agent;
pub mod condition;
pub mod hub;
pub mod member;
pub mod names;
pub mod rbac;

/// The API group of every federator resource.
pub const GROUP: &str = "federator.io";
/// The API version of every federator resource.
pub const VERSION: &str = "v1alpha1";

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    #[test]
    fn crds_have_status_and_printer_columns() {
        for crd in [
            crate::hub::Federation::crd(),
            crate::hub::MemberCluster::crd(),
            crate::member::ClusterTrust::crd(),
        ] {
            let v = &crd.spec.versions[0];
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{}",
                crd.spec.names.kind
            );
            assert!(
                v.additional_printer_columns
                    .as_ref()
                    .is_some_and(|c| c.len() >= 3)
            );
            let yaml = serde_yaml::to_string(&crd).unwrap();
            assert!(yaml.contains("conditions"), "{}", crd.spec.names.kind);
        }
    }
}
