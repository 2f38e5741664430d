//! The permissions each side gets in a member cluster. `federator join` installs exactly these;
//! keeping them next to the API types keeps the agent's needs and the installer in step.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role};

use crate::names;

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
    let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        verbs: v(verbs),
        resource_names: if names.is_empty() {
            None
        } else {
            Some(v(names))
        },
        non_resource_urls: None,
    }
}

fn role(name: &str, namespace: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: crate::plumbing::metadata(name, namespace),
        rules: Some(rules),
    }
}

/// Publishing Events (`events.k8s.io`): create, and patch to count repeats of one.
pub fn events_rule() -> PolicyRule {
    rule(&["events.k8s.io"], &["events"], &["create", "patch"], &[])
}

/// The hub's Role in the member's `federator-system`: read the exchange object and write its
/// spec, renew (and on leave, revoke) its own token. Nothing else: in particular no Secret.
pub fn hub_role() -> Role {
    role(
        names::HUB_SERVICE_ACCOUNT,
        names::NAMESPACE,
        vec![
            rule(
                &[crate::GROUP],
                &["clustertrusts"],
                &["get", "list", "watch", "patch", "update", "delete"],
                &[],
            ),
            rule(
                &[""],
                &["serviceaccounts/token"],
                &["create"],
                &[names::HUB_SERVICE_ACCOUNT],
            ),
            // So that `federator leave` can revoke the hub's own credential.
            rule(
                &[""],
                &["serviceaccounts"],
                &["delete"],
                &[names::HUB_SERVICE_ACCOUNT],
            ),
        ],
    )
}

/// The agent's Roles, each object named (the agent reads and watches single objects by name
/// with a `metadata.name` field selector, so `resourceNames` rules cover list and watch too;
/// only `create` cannot be limited by name):
///
/// * in `federator-system`: the exchange object and its status; its own key Secret; Events
///   about the exchange object;
/// * in `istio-system`: the `cacerts` Secret, the `istio` ConfigMap, the istiod Deployment
///   (its version and flags; to request a restart) and, read-only, the `istio-ca-root-cert`
///   ConfigMap istiod publishes (to see which bundle it took) — and nothing else there, in
///   particular not istiod's own `istio-ca-secret`.
pub fn agent_roles() -> Vec<Role> {
    let rw = ["get", "list", "watch", "patch", "update"];
    vec![
        role(
            names::AGENT_SERVICE_ACCOUNT,
            names::NAMESPACE,
            vec![
                rule(
                    &[crate::GROUP],
                    &["clustertrusts"],
                    &["get", "list", "watch"],
                    &[names::CLUSTER_TRUST],
                ),
                rule(
                    &[crate::GROUP],
                    &["clustertrusts/status"],
                    &["get", "patch", "update"],
                    &[names::CLUSTER_TRUST],
                ),
                rule(&[""], &["secrets"], &rw, &[names::AGENT_KEY_SECRET]),
                rule(&[""], &["secrets"], &["create"], &[]),
                events_rule(),
            ],
        ),
        role(
            names::AGENT_SERVICE_ACCOUNT,
            names::ISTIO_NAMESPACE,
            vec![
                rule(&[""], &["secrets"], &rw, &[names::CACERTS_SECRET]),
                rule(&[""], &["secrets"], &["create"], &[]),
                rule(&[""], &["configmaps"], &rw, &[names::ISTIO_CONFIGMAP]),
                // The roots istiod publishes: which bundle it has loaded (read only).
                rule(
                    &[""],
                    &["configmaps"],
                    &["get", "list", "watch"],
                    &[names::ISTIO_ROOT_CERT_CONFIGMAP],
                ),
                rule(
                    &["apps"],
                    &["deployments"],
                    &["get", "list", "watch", "patch"],
                    &[names::ISTIOD_DEPLOYMENT],
                ),
            ],
        ),
    ]
}
