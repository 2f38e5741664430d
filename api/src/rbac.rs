//! The permissions each side gets in a member cluster. `federator join` installs exactly these;
//! keeping them next to the API types keeps the agent's needs and the installer in step.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};

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

/// The hub's extra rules in a member that takes part in discovery (remote secrets): mint
/// short-lived tokens for the member's reader identity (and revoke it on leave), and write the
/// one Secret through which it hands the agent the peers' reader kubeconfigs. `patch` by name
/// only: no `get`, `list` or `watch` of any Secret, and no `create` (a hub that could create
/// Secrets could create a ServiceAccount token Secret for the agent and read its token back).
pub fn hub_discovery_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &["serviceaccounts/token"],
            &["create"],
            &[names::READER_SERVICE_ACCOUNT],
        ),
        rule(
            &[""],
            &["serviceaccounts"],
            &["delete"],
            &[names::READER_SERVICE_ACCOUNT],
        ),
        rule(&[""], &["secrets"], &["patch"], &[names::PEERS_SECRET]),
    ]
}

/// The hub's Role, with the discovery rules when the member takes part in discovery.
pub fn hub_role_for(remote_secrets: bool) -> Role {
    let mut role = hub_role();
    if remote_secrets && let Some(rules) = role.rules.as_mut() {
        rules.extend(hub_discovery_rules());
    }
    role
}

const READ: [&str; 3] = ["get", "list", "watch"];

/// The reader identity's ClusterRole: exactly what another member's istiod reads from this
/// cluster for endpoint discovery in multi-primary (Istio's remote cluster controller,
/// `pilot/pkg/serviceregistry/kube/controller`), rule by rule against Istio's own
/// `istio-reader-clusterrole` (istio-discovery chart, `templates/reader-clusterrole.yaml`),
/// which `istioctl create-remote-secret` binds:
///
/// | istio-reader rule | here | why |
/// |---|---|---|
/// | `*` of the Istio config groups | only `workloadentries` | in multi-primary every istiod takes its config from its own cluster; it reads WorkloadEntries of remote clusters (`PILOT_ENABLE_CROSS_CLUSTER_WORKLOAD_ENTRY`, on by default) because Services there select them: they are endpoints |
/// | core `endpoints` | dropped | istiod reads EndpointSlices, not Endpoints |
/// | core `pods`, `services`, `nodes`, `namespaces` | kept | see the rules |
/// | core `replicationcontrollers` | dropped | not read by istiod |
/// | core `secrets` | get/list/watch kept | istiod's remote credentials controller (gateway certificates of that cluster, `pilot/pkg/credentials/kube`) watches every remote cluster's Secrets, and istiod counts the cluster synced only once that list succeeded; the one switch that turns it off (`PILOT_ENABLE_REMOTE_CREDENTIALS_CONTROLLER=false`) crashes istiod 1.31 (nil pointer in `CredentialsController.HasSynced`), so the right stays until Istio fixes that |
/// | core `configmaps` (cluster-wide) | only `istio-system/istio`, in [`reader_role`] | istiod reads a remote cluster's mesh config (its trust domain) |
/// | `gateways` (Gateway API, `networking.x-k8s.io`) | Gateway API only | east-west network gateways; the `networking.x-k8s.io` group is retired |
/// | `customresourcedefinitions` | kept | istiod starts its informers of optional kinds (Gateway API, WorkloadEntry) only once it sees their CRD |
/// | `endpointslices` | kept | the endpoints |
/// | MCS `serviceexports` (incl. create, delete), `serviceimports` | dropped | only with `ENABLE_MCS_SERVICE_DISCOVERY` (off by default) |
/// | `replicasets` | dropped | not read by istiod |
/// | `tokenreviews`, `subjectaccessreviews` create | dropped | authenticating workloads of that cluster: only when its Pods connect to this istiod (primary-remote) |
pub fn reader_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some(names::READER_SERVICE_ACCOUNT.to_owned()),
            labels: Some(crate::plumbing::managed_labels()),
            ..Default::default()
        },
        rules: Some(vec![
            // Services: the registry itself.
            rule(&[""], &["services"], &READ, &[]),
            // EndpointSlices: the endpoints of those Services.
            rule(&["discovery.k8s.io"], &["endpointslices"], &READ, &[]),
            // Pods: the workload behind an endpoint (labels, ServiceAccount, locality).
            rule(&[""], &["pods"], &READ, &[]),
            // Nodes: locality (topology labels) and NodePort addresses of network gateways.
            rule(&[""], &["nodes"], &READ, &[]),
            // Namespaces: discovery selectors and the `topology.istio.io/network` label.
            rule(&[""], &["namespaces"], &READ, &[]),
            // WorkloadEntries selected by Services of that cluster are endpoints too.
            rule(&["networking.istio.io"], &["workloadentries"], &READ, &[]),
            // Gateway API Gateways labelled with a network: east-west gateways.
            rule(&["gateway.networking.k8s.io"], &["gateways"], &READ, &[]),
            // Secrets: istiod's remote credentials controller watches them (read-only; see the
            // table above for why this cannot be dropped with istiod 1.31).
            rule(&[""], &["secrets"], &READ, &[]),
            // istiod's CRD watcher gates the informers of optional kinds.
            rule(
                &["apiextensions.k8s.io"],
                &["customresourcedefinitions"],
                &READ,
                &[],
            ),
        ]),
        aggregation_rule: None,
    }
}

/// The reader identity's Role in `istio-system`: the mesh config, by name (istiod watches it
/// with a `metadata.name` field selector, so `resourceNames` covers list and watch).
pub fn reader_role() -> Role {
    role(
        names::READER_SERVICE_ACCOUNT,
        names::ISTIO_NAMESPACE,
        vec![rule(
            &[""],
            &["configmaps"],
            &READ,
            &[names::ISTIO_CONFIGMAP],
        )],
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
///   ConfigMap istiod publishes (to see which bundle it took) and the `ztunnel` DaemonSet
///   (whether ambient mode is on) — and nothing else there, in particular not istiod's own
///   `istio-ca-secret`.
///
/// With `remote_secrets`, the agent also reads the hub's [`names::PEERS_SECRET`] (by name) and
/// manages the remote secrets in `istio-system`. Their names follow the member names, which
/// a Role cannot list in advance, and finding remote secrets it did not write (to leave them
/// alone and report them) takes a list: so these rules cover every Secret of `istio-system`.
/// That is the one right of the agent not limited by name; `docs/security.md` weighs it.
pub fn agent_roles_for(remote_secrets: bool) -> Vec<Role> {
    let mut roles = agent_roles();
    if remote_secrets {
        for role in &mut roles {
            let rules = role.rules.get_or_insert_with(Vec::new);
            match role.metadata.namespace.as_deref() {
                Some(names::NAMESPACE) => {
                    rules.push(rule(&[""], &["secrets"], &READ, &[names::PEERS_SECRET]));
                }
                Some(names::ISTIO_NAMESPACE) => rules.push(rule(
                    &[""],
                    &["secrets"],
                    &["get", "list", "watch", "update", "delete"],
                    &[],
                )),
                _ => {}
            }
        }
    }
    roles
}

/// The agent's Roles without remote secrets (see [`agent_roles_for`]).
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
                // Is ambient mode on (read only, and only with the trust-domain name
                // constraint, which ztunnel rejects)?
                rule(
                    &["apps"],
                    &["daemonsets"],
                    &["get"],
                    &[names::ZTUNNEL_DAEMONSET],
                ),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(group, resource, verbs)` of every rule of Istio's `istio-reader-clusterrole`
    /// (istio.io/istio at the commit the testbed's istiod is built from, default values).
    const ISTIO_READER: &[(&str, &str, &[&str])] = &[
        ("networking.istio.io", "*", &["get", "list", "watch"]),
        ("security.istio.io", "*", &["get", "list", "watch"]),
        ("config.istio.io", "*", &["get", "list", "watch"]),
        ("telemetry.istio.io", "*", &["get", "list", "watch"]),
        ("extensions.istio.io", "*", &["get", "list", "watch"]),
        ("", "endpoints", &["get", "list", "watch"]),
        ("", "pods", &["get", "list", "watch"]),
        ("", "services", &["get", "list", "watch"]),
        ("", "nodes", &["get", "list", "watch"]),
        ("", "replicationcontrollers", &["get", "list", "watch"]),
        ("", "namespaces", &["get", "list", "watch"]),
        ("", "secrets", &["get", "list", "watch"]),
        ("", "configmaps", &["get", "list", "watch"]),
        (
            "networking.istio.io",
            "workloadentries",
            &["get", "list", "watch"],
        ),
        (
            "gateway.networking.k8s.io",
            "gateways",
            &["get", "list", "watch"],
        ),
        (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            &["get", "list", "watch"],
        ),
        (
            "discovery.k8s.io",
            "endpointslices",
            &["get", "list", "watch"],
        ),
        (
            "multicluster.x-k8s.io",
            "serviceexports",
            &["get", "list", "watch", "create", "delete"],
        ),
        (
            "multicluster.x-k8s.io",
            "serviceimports",
            &["get", "list", "watch"],
        ),
        ("apps", "replicasets", &["get", "list", "watch"]),
        ("authentication.k8s.io", "tokenreviews", &["create"]),
        ("authorization.k8s.io", "subjectaccessreviews", &["create"]),
    ];

    fn granted_by_istio(group: &str, resource: &str, verb: &str) -> bool {
        ISTIO_READER.iter().any(|(g, r, verbs)| {
            *g == group && (*r == resource || *r == "*") && verbs.contains(&verb)
        })
    }

    fn triples(rules: &[PolicyRule]) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for r in rules {
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        out.push((g.clone(), res.clone(), v.clone()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_reader_is_a_read_only_subset_of_istio_reader() {
        let mut rules = reader_cluster_role().rules.unwrap();
        rules.extend(reader_role().rules.unwrap());
        let granted = triples(&rules);
        assert!(!granted.is_empty());
        for (g, r, v) in &granted {
            assert!(
                granted_by_istio(g, r, v),
                "{v} {r}.{g} is not in istio-reader"
            );
            assert!(["get", "list", "watch"].contains(&v.as_str()), "{v} {r}");
            assert_ne!(r, "*", "no wildcards");
        }
        // What endpoint discovery cannot do without.
        for needed in [
            ("", "services"),
            ("discovery.k8s.io", "endpointslices"),
            ("", "pods"),
            ("", "namespaces"),
        ] {
            for v in ["get", "list", "watch"] {
                assert!(
                    granted.contains(&(needed.0.into(), needed.1.into(), v.into())),
                    "{v} {needed:?}"
                );
            }
        }
        // The mesh config only, by name, only in istio-system.
        let role = reader_role();
        assert_eq!(
            role.metadata.namespace.as_deref(),
            Some(names::ISTIO_NAMESPACE)
        );
        let cm = &role.rules.as_ref().unwrap()[0];
        assert_eq!(
            cm.resource_names.as_deref(),
            Some(&[names::ISTIO_CONFIGMAP.to_owned()][..])
        );
        // Fewer rights than Istio's reader by far.
        let istio: usize = ISTIO_READER.iter().map(|(_, _, v)| v.len()).sum();
        assert!(granted.len() * 2 < istio, "{} of {istio}", granted.len());
    }

    #[test]
    fn the_hub_never_reads_a_member_secret() {
        for remote in [false, true] {
            let rules = hub_role_for(remote).rules.unwrap();
            for r in &rules {
                if r.resources.iter().flatten().any(|x| x == "secrets") {
                    assert_eq!(r.verbs, ["patch"], "{r:?}");
                    assert_eq!(
                        r.resource_names.as_deref(),
                        Some(&[names::PEERS_SECRET.to_owned()][..])
                    );
                }
            }
            let has_peers = rules.iter().any(|r| {
                r.resource_names
                    .iter()
                    .flatten()
                    .any(|n| n == names::PEERS_SECRET)
            });
            assert_eq!(has_peers, remote);
        }
    }

    #[test]
    fn remote_secrets_add_rules_only_to_the_agent_roles_and_only_for_secrets() {
        let plain = agent_roles();
        let with = agent_roles_for(true);
        assert_eq!(agent_roles_for(false), plain);
        for (a, b) in plain.iter().zip(&with) {
            let (a, b) = (a.rules.as_ref().unwrap(), b.rules.as_ref().unwrap());
            assert_eq!(&b[..a.len()], &a[..]);
            for extra in &b[a.len()..] {
                assert_eq!(
                    extra.resources.as_deref(),
                    Some(&["secrets".to_owned()][..])
                );
                assert!(!extra.verbs.iter().any(|v| v == "create" || v == "patch"));
            }
        }
    }
}
