//! `federator join cluster` and `federator leave cluster`.
//!
//! Join uses the admin kubeconfig the user passes once: it checks reachability and the
//! permissions it needs (and names every missing one before writing anything), installs the
//! ClusterTrust CRD, namespaces, ServiceAccounts, Roles and RoleBindings (and the agent
//! Deployment in `in-cluster` mode), creates the exchange object, mints a token for the hub's
//! own least-privilege ServiceAccount and stores only that on the hub. Running it again
//! changes nothing.
//!
//! Join, leave and the member-side objects they install and remove stay in one file (about
//! 500 lines): they are one job — a cluster's membership — and read best side by side.

use std::path::PathBuf;
use std::time::Duration;

use federator_api::hub::{MemberCluster, MemberClusterSpec};
use federator_api::member::{ClusterTrust, ClusterTrustSpec};
use federator_api::{names, rbac};
use federator_core::identity::{ClusterName, TrustDomain};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Client, CustomResourceExt};
use time::OffsetDateTime;

use super::kube::{self as k, ClientSource, Permission};
use super::member_access;
use super::trust::roots::local_root_options;
use super::trust::store::RootStore;
use crate::{Error, Result};

/// Where the agent runs.
#[derive(Clone, Debug)]
pub enum AgentMode {
    /// As a Deployment in the member, with this image.
    InCluster {
        /// Container image.
        image: String,
    },
    /// Outside the cluster; optionally write a kubeconfig for the agent's identity here.
    External {
        /// Where to write the agent's kubeconfig (0600).
        kubeconfig_out: Option<PathBuf>,
    },
}

/// `join` options.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// Cluster name.
    pub name: ClusterName,
    /// The admin kubeconfig (and context) for the member.
    pub member: ClientSource,
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Istio network.
    pub network: String,
    /// Agent mode.
    pub agent: AgentMode,
    /// Lifetime of the hub's token for the member (renewed by `serve`).
    pub hub_token_ttl: Duration,
}

/// What join did.
#[derive(Debug, Default)]
pub struct JoinReport {
    /// Whether the member was newly registered on the hub.
    pub registered: bool,
    /// Whether a new hub credential was minted.
    pub new_credential: bool,
    /// The member's API server.
    pub server: String,
    /// For the external agent mode: how to start it.
    pub agent_command: Option<String>,
}

fn required_permissions(in_cluster: bool) -> Vec<Permission> {
    let p = |verb, group, resource, subresource, namespace| Permission {
        verb,
        group,
        resource,
        subresource,
        namespace,
    };
    let fs = Some(names::NAMESPACE);
    let is = Some(names::ISTIO_NAMESPACE);
    let mut v = vec![
        p(
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            None,
        ),
        p(
            "patch",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            None,
        ),
        p("create", "", "namespaces", None, None),
        p("create", "", "serviceaccounts", None, fs),
        p("create", "", "serviceaccounts", Some("token"), fs),
        p("patch", "rbac.authorization.k8s.io", "roles", None, fs),
        p("patch", "rbac.authorization.k8s.io", "roles", None, is),
        p(
            "patch",
            "rbac.authorization.k8s.io",
            "rolebindings",
            None,
            fs,
        ),
        p(
            "patch",
            "rbac.authorization.k8s.io",
            "rolebindings",
            None,
            is,
        ),
        p("create", federator_api::GROUP, "clustertrusts", None, fs),
    ];
    if in_cluster {
        v.push(p("patch", "apps", "deployments", None, fs));
    }
    v
}

/// Joins a member cluster.
pub async fn join(hub: &Client, opts: &JoinOptions) -> Result<JoinReport> {
    let name = opts.name.as_str();
    // The hub must be initialised.
    let federation = k::federation(hub).await?;
    let members: Api<MemberCluster> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let existing = members
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("read MemberCluster", e))?;
    if let Some(m) = &existing
        && m.spec.trust_domain != opts.trust_domain.as_str()
    {
        return Err(Error::Refused(format!(
            "cluster {name} already joined with trust domain {}; run `federator leave cluster {name}` first to change it",
            m.spec.trust_domain
        )));
    }

    // Reach the member and check every permission before writing anything.
    let config = k::config_from(&opts.member).await?;
    let server = k::server_of(&config);
    let member = k::client(&config, name)?;
    k::check_reachable(&member, &server, &format!("cluster {name}")).await?;
    let in_cluster = matches!(opts.agent, AgentMode::InCluster { .. });
    let missing = k::missing_permissions(&member, &required_permissions(in_cluster)).await?;
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Permissions(format!(
            "the kubeconfig for cluster {name} cannot: {list}. Use a kubeconfig with cluster-admin rights for join (only join needs them; the hub keeps a narrower credential)"
        )));
    }
    // An exchange object from another federation or name is a conflict, not something to overwrite.
    let trusts: Api<ClusterTrust> = Api::namespaced(member.clone(), names::NAMESPACE);
    if let Some(ct) = trusts.get_opt(names::CLUSTER_TRUST).await.ok().flatten()
        && (ct.spec.cluster_name != name || ct.spec.trust_domain != opts.trust_domain.as_str())
    {
        return Err(Error::Refused(format!(
            "this cluster already belongs to a federation as {} (trust domain {}); run `federator leave cluster {}` there first",
            ct.spec.cluster_name, ct.spec.trust_domain, ct.spec.cluster_name
        )));
    }

    // Make sure the trust domain has a root (local backend).
    RootStore::new(hub.clone())
        .ensure_trust_domains(
            std::slice::from_ref(&opts.trust_domain),
            &local_root_options(&federation.spec),
        )
        .await?;

    install_member_objects(&member, opts).await?;
    if trusts
        .get_opt(names::CLUSTER_TRUST)
        .await
        .map_err(|e| Error::kube("read ClusterTrust", e))?
        .is_none()
    {
        let ct = ClusterTrust {
            metadata: meta(names::CLUSTER_TRUST, names::NAMESPACE),
            spec: ClusterTrustSpec {
                cluster_name: name.to_owned(),
                trust_domain: opts.trust_domain.to_string(),
                csr_generation: 1,
                key_algorithm: federation.spec.key_algorithm.to_string(),
                ..ClusterTrustSpec::default()
            },
            status: None,
        };
        match trusts.create(&PostParams::default(), &ct).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(Error::kube("create ClusterTrust", e)),
        }
    }

    // The hub's credential: keep a working one, otherwise mint and verify a new one.
    let secret_name = names::member_credential_secret(name);
    let mut report = JoinReport {
        server: server.clone(),
        ..JoinReport::default()
    };
    let still_good = match member_access::stored_kubeconfig(hub, &secret_name).await? {
        Some(stored) => {
            let fresh = !stored.needs_renewal(OffsetDateTime::now_utc());
            let c = stored.client(name).await?;
            fresh && member_access::credential_works(&c).await.is_ok()
        }
        None => false,
    };
    if !still_good {
        let (token, expires) =
            member_access::request_token(&member, names::HUB_SERVICE_ACCOUNT, opts.hub_token_ttl)
                .await?;
        let yaml = member_access::token_kubeconfig(name, &config, &token)?;
        let c = k::client_from_kubeconfig_yaml(&yaml, name).await?;
        member_access::credential_works(&c).await?;
        member_access::store_kubeconfig(hub, &secret_name, name, &yaml, expires).await?;
        report.new_credential = true;
    }

    let spec = MemberClusterSpec {
        trust_domain: opts.trust_domain.to_string(),
        network: opts.network.clone(),
        credential_secret: secret_name,
        server: server.clone(),
        agent_mode: Some(if in_cluster {
            federator_api::hub::AgentMode::InCluster
        } else {
            federator_api::hub::AgentMode::External
        }),
    };
    if existing.as_ref().map(|m| &m.spec) != Some(&spec) {
        let mc = MemberCluster {
            metadata: meta(name, names::NAMESPACE),
            spec,
            status: None,
        };
        k::apply(&members, &mc).await?;
        report.registered = existing.is_none();
    }

    if let AgentMode::External { kubeconfig_out } = &opts.agent {
        let cmd = match kubeconfig_out {
            Some(path) => {
                let (token, _) = member_access::request_token(
                    &member,
                    names::AGENT_SERVICE_ACCOUNT,
                    opts.hub_token_ttl,
                )
                .await?;
                let yaml = member_access::token_kubeconfig(name, &config, &token)?;
                let mut files = std::collections::BTreeMap::new();
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?;
                files.insert(file_name, crate::fsutil::FileSpec::secret(yaml));
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                crate::fsutil::write_files_atomically(dir, &files, true)?;
                format!(
                    "cluster-agent --kubeconfig {} --cluster-name {name}",
                    path.display()
                )
            }
            None => format!(
                "cluster-agent --kubeconfig <kubeconfig for ServiceAccount {}/{}> --cluster-name {name}",
                names::NAMESPACE,
                names::AGENT_SERVICE_ACCOUNT
            ),
        };
        report.agent_command = Some(cmd);
    }
    Ok(report)
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    federator_api::plumbing::metadata(name, namespace)
}

/// Installs (or converges) the member-side objects. Each is applied only when it differs.
async fn install_member_objects(member: &Client, opts: &JoinOptions) -> Result<()> {
    k::install_crds(member, vec![ClusterTrust::crd()]).await?;
    k::ensure_namespace(member, names::NAMESPACE).await?;
    k::ensure_namespace(member, names::ISTIO_NAMESPACE).await?;

    let sas: Api<ServiceAccount> = Api::namespaced(member.clone(), names::NAMESPACE);
    for sa in [names::HUB_SERVICE_ACCOUNT, names::AGENT_SERVICE_ACCOUNT] {
        if sas
            .get_opt(sa)
            .await
            .map_err(|e| Error::kube("read ServiceAccount", e))?
            .is_none()
        {
            let obj = ServiceAccount {
                metadata: meta(sa, names::NAMESPACE),
                ..ServiceAccount::default()
            };
            match sas.create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(Error::kube("create ServiceAccount", e)),
            }
        }
    }

    let mut roles = rbac::agent_roles();
    roles.push(rbac::hub_role());
    for role in roles {
        let ns = role.metadata.namespace.clone().unwrap_or_default();
        let role_name = role.metadata.name.clone().unwrap_or_default();
        let api: Api<Role> = Api::namespaced(member.clone(), &ns);
        let current = api
            .get_opt(&role_name)
            .await
            .map_err(|e| Error::kube("read Role", e))?;
        if current.as_ref().map(|r| &r.rules) != Some(&role.rules) {
            k::apply(&api, &role).await?;
        }
        let binding = RoleBinding {
            metadata: meta(&role_name, &ns),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: role_name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: role_name.clone(),
                namespace: Some(names::NAMESPACE.into()),
                api_group: None,
            }]),
        };
        let bindings: Api<RoleBinding> = Api::namespaced(member.clone(), &ns);
        let current = bindings
            .get_opt(&role_name)
            .await
            .map_err(|e| Error::kube("read RoleBinding", e))?;
        if current.as_ref().map(|b| (&b.role_ref, &b.subjects))
            != Some((&binding.role_ref, &binding.subjects))
        {
            k::apply(&bindings, &binding).await?;
        }
    }

    if let AgentMode::InCluster { image } = &opts.agent {
        let deploy = agent_deployment(image, opts.name.as_str());
        let api: Api<Deployment> = Api::namespaced(member.clone(), names::NAMESPACE);
        let current = api
            .get_opt(names::AGENT_DEPLOYMENT)
            .await
            .map_err(|e| Error::kube("read Deployment", e))?;
        let image_of = |d: &Deployment| {
            d.spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.clone())
        };
        if current.as_ref().and_then(image_of) != image_of(&deploy) {
            k::apply(&api, &deploy).await?;
        }
    }
    Ok(())
}

/// The agent's Deployment.
pub fn agent_deployment(image: &str, cluster: &str) -> Deployment {
    let labels: std::collections::BTreeMap<String, String> = [(
        "app.kubernetes.io/name".to_owned(),
        names::AGENT_DEPLOYMENT.to_owned(),
    )]
    .into();
    Deployment {
        metadata: meta(names::AGENT_DEPLOYMENT, names::NAMESPACE),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names::AGENT_SERVICE_ACCOUNT.to_owned()),
                    containers: vec![Container {
                        name: "cluster-agent".into(),
                        image: Some(image.to_owned()),
                        args: Some(vec!["--cluster-name".into(), cluster.to_owned()]),
                        security_context: Some(k8s_openapi::api::core::v1::SecurityContext {
                            run_as_non_root: Some(true),
                            read_only_root_filesystem: Some(true),
                            allow_privilege_escalation: Some(false),
                            ..Default::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// What leave did.
#[derive(Debug, Default)]
pub struct LeaveReport {
    /// Whether the hub's credential in the member was revoked (its ServiceAccount deleted).
    pub credential_revoked: bool,
    /// The departed cluster's trust domain and the members still in it, when there are any:
    /// they share its root, so only a root rotation stops trusting the departed cluster.
    pub shared_trust_domain: Option<(TrustDomain, Vec<String>)>,
    /// A warning when the member could not be reached.
    pub warning: Option<String>,
}

/// Removes a member: revokes the hub's credential in the member (best effort), deletes the
/// exchange object there, and deletes the MemberCluster and credential on the hub. `serve`
/// then removes its trust domain's roots from every other member (when no one else uses it).
pub async fn leave(hub: &Client, name: &ClusterName) -> Result<LeaveReport> {
    let members: Api<MemberCluster> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let secret_name = names::member_credential_secret(name.as_str());
    let Some(member) = members
        .get_opt(name.as_str())
        .await
        .map_err(|e| Error::kube("read MemberCluster", e))?
    else {
        return Err(Error::Usage(format!(
            "cluster {name} is not a member (see `federator status`)"
        )));
    };
    let mut report = LeaveReport::default();
    let sharing: Vec<String> = members
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| Error::kube("list MemberClusters", e))?
        .items
        .iter()
        .filter(|m| {
            m.spec.trust_domain == member.spec.trust_domain
                && m.metadata.name.as_deref() != Some(name.as_str())
        })
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    if !sharing.is_empty() {
        report.shared_trust_domain = Some((TrustDomain::new(&member.spec.trust_domain)?, sharing));
    }
    if let Some(stored) = member_access::stored_kubeconfig(hub, &secret_name).await? {
        let result: Result<()> = async {
            let c = stored.client(name.as_str()).await?;
            let trusts: Api<ClusterTrust> = Api::namespaced(c.clone(), names::NAMESPACE);
            let sas: Api<ServiceAccount> = Api::namespaced(c, names::NAMESPACE);
            let _ = trusts
                .delete(names::CLUSTER_TRUST, &DeleteParams::default())
                .await;
            sas.delete(names::HUB_SERVICE_ACCOUNT, &DeleteParams::default())
                .await
                .map_err(|e| Error::kube("revoke the hub's ServiceAccount", e))?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => report.credential_revoked = true,
            Err(e) => {
                report.warning = Some(format!(
                    "could not clean up inside cluster {name} ({e}); delete ServiceAccount {}/{} there to revoke the hub's token",
                    names::NAMESPACE,
                    names::HUB_SERVICE_ACCOUNT
                ))
            }
        }
    }
    members
        .delete(name.as_str(), &DeleteParams::default())
        .await
        .map_err(|e| Error::kube("delete MemberCluster", e))?;
    match secrets.delete(&secret_name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(Error::kube("delete the member credential", e)),
    }
    Ok(report)
}
