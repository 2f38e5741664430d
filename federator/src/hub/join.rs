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
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
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
    /// In-cluster mode: how long to wait for the agent Deployment to become available
    /// (zero: do not wait).
    pub agent_wait: Duration,
    /// Take part in endpoint discovery: install the reader identity and the peers Secret.
    pub remote_secrets: bool,
    /// The member's API server as the hub and the other members reach it (`--server`), when
    /// it is not the admin kubeconfig's.
    pub server: Option<String>,
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
    /// In-cluster mode: how long the agent Deployment took to become available (`None`: not
    /// waited for).
    pub agent_available_after: Option<Duration>,
}

fn required_permissions(in_cluster: bool, remote_secrets: bool, network: bool) -> Vec<Permission> {
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
    if network {
        v.push(p("patch", "", "namespaces", None, None));
    }
    if remote_secrets {
        let rbac = "rbac.authorization.k8s.io";
        v.push(p("patch", rbac, "clusterroles", None, None));
        v.push(p("patch", rbac, "clusterrolebindings", None, None));
        v.push(p("create", "", "secrets", None, fs));
    }
    if in_cluster {
        v.push(p("patch", "apps", "deployments", None, fs));
        // To wait for the agent and say why it does not start.
        v.push(p("get", "apps", "deployments", None, fs));
        v.push(p("list", "", "pods", None, fs));
    }
    v
}

/// Fails, naming every permission of `wanted` that `client` lacks, when there is one.
async fn require(client: &Client, wanted: &[Permission], who: &str, when: &str) -> Result<()> {
    let missing = k::missing_permissions(client, wanted).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Permissions(format!(
        "{who} cannot: {list}. Use a kubeconfig with cluster-admin rights {when}"
    )))
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
    let member = k::client(&config, name)?;
    k::check_reachable(&member, &k::server_of(&config), &format!("cluster {name}")).await?;
    // Where the hub's credential (and, through it, the reader kubeconfig) points.
    let hub_config = match &opts.server {
        None => config.clone(),
        Some(url) => {
            let mut c = config.clone();
            c.cluster_url = url
                .parse()
                .map_err(|e| Error::Usage(format!("--server {url}: {e}")))?;
            c
        }
    };
    let server = k::server_of(&hub_config);
    let in_cluster = matches!(opts.agent, AgentMode::InCluster { .. });
    require(
        &member,
        &required_permissions(in_cluster, opts.remote_secrets, !opts.network.is_empty()),
        &format!("the kubeconfig for cluster {name}"),
        "for join (only join needs them; the hub keeps a narrower credential)",
    )
    .await?;
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
    federator_api::failpoint!("join.after-roots");

    install_member_objects(&member, opts).await?;
    federator_api::failpoint!("join.after-member-objects");
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
    federator_api::failpoint!("join.after-cluster-trust");

    // The agent must run before the hub relies on it: a Deployment that cannot become
    // available fails the join here, with the reason, before anything is registered on the hub.
    let mut report = JoinReport {
        server: server.clone(),
        ..JoinReport::default()
    };
    if in_cluster && !opts.agent_wait.is_zero() {
        report.agent_available_after =
            Some(super::rollout::wait_available(&member, name, opts.agent_wait).await?);
    }

    // The hub's credential: keep a working one, otherwise mint and verify a new one.
    let secret_name = names::member_credential_secret(name);
    let still_good = match member_access::stored_kubeconfig(hub, &secret_name).await? {
        Some(stored) => {
            let fresh = !stored.needs_renewal(OffsetDateTime::now_utc());
            let same_server = stored.server().await.ok().as_deref() == Some(server.as_str());
            // Checked through the admin kubeconfig's address: join need not reach --server.
            let c = k::client_from_kubeconfig_yaml(&stored.with_server(&config)?, name).await?;
            fresh && same_server && member_access::credential_works(&c).await.is_ok()
        }
        None => false,
    };
    if !still_good {
        let (token, expires) =
            member_access::request_token(&member, names::HUB_SERVICE_ACCOUNT, opts.hub_token_ttl)
                .await?;
        let c = k::client_from_kubeconfig_yaml(
            &member_access::token_kubeconfig(name, &config, &token)?,
            name,
        )
        .await?;
        member_access::credential_works(&c).await?;
        let yaml = member_access::token_kubeconfig(name, &hub_config, &token)?;
        member_access::store_kubeconfig(hub, &secret_name, name, &yaml, expires).await?;
        report.new_credential = true;
    }
    federator_api::failpoint!("join.after-credential");

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
        remote_secrets: opts.remote_secrets,
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
    federator_api::failpoint!("join.after-member-cluster");

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
    if !opts.network.is_empty() {
        label_network(member, &opts.network).await?;
    }

    let sas: Api<ServiceAccount> = Api::namespaced(member.clone(), names::NAMESPACE);
    let mut accounts = vec![names::HUB_SERVICE_ACCOUNT, names::AGENT_SERVICE_ACCOUNT];
    if opts.remote_secrets {
        accounts.push(names::READER_SERVICE_ACCOUNT);
    }
    for sa in accounts {
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

    for role in member_roles(opts.remote_secrets) {
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

    if opts.remote_secrets {
        install_reader(member).await?;
    }

    if let AgentMode::InCluster { image } = &opts.agent {
        let deploy = agent_deployment(image, opts.name.as_str())?;
        let api: Api<Deployment> = Api::namespaced(member.clone(), names::NAMESPACE);
        let current = api
            .get_opt(names::AGENT_DEPLOYMENT)
            .await
            .map_err(|e| Error::kube("read Deployment", e))?;
        let hash = |d: &Deployment| {
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SPEC_HASH_ANNOTATION))
                .cloned()
        };
        if current.as_ref().and_then(hash) != hash(&deploy) {
            k::apply(&api, &deploy).await?;
        }
    }
    Ok(())
}

/// The label Istio reads a cluster's network from, on its system namespace.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";

/// Labels `istio-system` with the member's network (multi-network meshes: east-west gateways),
/// when it is not labelled so yet.
async fn label_network(member: &Client, network: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(member.clone());
    let current = api
        .get_opt(names::ISTIO_NAMESPACE)
        .await
        .map_err(|e| Error::kube("read namespace istio-system", e))?;
    let labelled = current
        .as_ref()
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(NETWORK_LABEL))
        .is_some_and(|v| v == network);
    if !labelled {
        api.patch(
            names::ISTIO_NAMESPACE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": {"labels": {NETWORK_LABEL: network}}
            })),
        )
        .await
        .map_err(|e| Error::kube("label namespace istio-system with the network", e))?;
    }
    Ok(())
}

/// The Roles join installs in a member (each bound to the ServiceAccount of its name).
fn member_roles(remote_secrets: bool) -> Vec<Role> {
    let mut roles = rbac::agent_roles_for(remote_secrets);
    roles.push(rbac::hub_role_for(remote_secrets));
    if remote_secrets {
        roles.push(rbac::reader_role());
    }
    roles
}

/// The reader identity's cluster-wide rights ([`rbac::reader_cluster_role`]) and the empty
/// peers Secret the hub fills (it may patch it but not create it). Applied only when they
/// differ.
async fn install_reader(member: &Client) -> Result<()> {
    let role = rbac::reader_cluster_role();
    let api: Api<ClusterRole> = Api::all(member.clone());
    let current = api
        .get_opt(names::READER_SERVICE_ACCOUNT)
        .await
        .map_err(|e| Error::kube("read ClusterRole", e))?;
    if current.as_ref().map(|r| &r.rules) != Some(&role.rules) {
        k::apply(&api, &role).await?;
    }
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(names::READER_SERVICE_ACCOUNT.to_owned()),
            labels: Some(federator_api::plumbing::managed_labels()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: names::READER_SERVICE_ACCOUNT.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: names::READER_SERVICE_ACCOUNT.into(),
            namespace: Some(names::NAMESPACE.into()),
            api_group: None,
        }]),
    };
    let api: Api<ClusterRoleBinding> = Api::all(member.clone());
    let current = api
        .get_opt(names::READER_SERVICE_ACCOUNT)
        .await
        .map_err(|e| Error::kube("read ClusterRoleBinding", e))?;
    if current.as_ref().map(|b| (&b.role_ref, &b.subjects))
        != Some((&binding.role_ref, &binding.subjects))
    {
        k::apply(&api, &binding).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(member.clone(), names::NAMESPACE);
    let peers = Secret {
        metadata: meta(names::PEERS_SECRET, names::NAMESPACE),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    federator_api::plumbing::create_or_accept(&secrets, &PostParams::default(), &peers)
        .await
        .map_err(|e| Error::kube("create the peers Secret", e))?;
    Ok(())
}

/// Annotation on the agent Deployment: the SHA-256 of the spec join applied, so a re-run
/// writes only when the desired spec changed (a new image, a new federator version).
pub const SPEC_HASH_ANNOTATION: &str = "federator.io/spec-sha256";

/// The agent's Deployment ([`federator_api::agent::deployment`]), with the managed-by label
/// and the hash of its spec.
pub fn agent_deployment(image: &str, cluster: &str) -> Result<Deployment> {
    let mut d = federator_api::agent::deployment(image, cluster);
    let spec = serde_json::to_vec(&d.spec).map_err(Error::encode("the agent Deployment"))?;
    d.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            SPEC_HASH_ANNOTATION.to_owned(),
            federator_core::cert::fingerprint(&spec),
        );
    Ok(d)
}

/// What leave did.
#[derive(Debug, Default)]
pub struct LeaveReport {
    /// Whether the cluster was a member on the hub (and is not any more).
    pub was_member: bool,
    /// Whether the hub's credential in the member was revoked (its ServiceAccount deleted).
    pub credential_revoked: bool,
    /// The departed cluster's trust domain and the members still in it, when there are any:
    /// they share its root, so only a root rotation stops trusting the departed cluster.
    pub shared_trust_domain: Option<(TrustDomain, Vec<String>)>,
    /// A warning when the member could not be reached.
    pub warning: Option<String>,
    /// What was removed: from the member, and the hub's Secrets holding credentials for it.
    pub removed: Vec<String>,
    /// What `join` installed that is still in the member, and how to remove it.
    pub left_behind: Vec<String>,
    /// What the member's `cacerts` (left in place) still holds.
    pub cacerts: Option<CacertsLeft>,
}

/// What stays trusted through the `cacerts` a departed member keeps.
#[derive(Debug, Clone, Default)]
pub struct CacertsLeft {
    /// The member's trust domain.
    pub trust_domain: String,
    /// The trust domains whose roots its `root-cert.pem` holds.
    pub trusts: Vec<String>,
    /// NotAfter of its cluster CA (RFC 3339), if known.
    pub ca_not_after: Option<String>,
}

/// What `join` installs in a member, for `leave` to remove: (kind, namespace, name).
fn installed_objects() -> Vec<(&'static str, &'static str, &'static str)> {
    let (fs, is) = (names::NAMESPACE, names::ISTIO_NAMESPACE);
    vec![
        ("ClusterTrust", fs, names::CLUSTER_TRUST),
        ("Deployment", fs, names::AGENT_DEPLOYMENT),
        ("RoleBinding", fs, names::AGENT_SERVICE_ACCOUNT),
        ("RoleBinding", is, names::AGENT_SERVICE_ACCOUNT),
        ("RoleBinding", fs, names::HUB_SERVICE_ACCOUNT),
        ("Role", fs, names::AGENT_SERVICE_ACCOUNT),
        ("Role", is, names::AGENT_SERVICE_ACCOUNT),
        ("Role", fs, names::HUB_SERVICE_ACCOUNT),
        ("Secret", fs, names::AGENT_KEY_SECRET),
        ("ServiceAccount", fs, names::AGENT_SERVICE_ACCOUNT),
        ("ServiceAccount", fs, names::HUB_SERVICE_ACCOUNT),
        // The reader identity and the peers Secret (remote secrets).
        ("RoleBinding", is, names::READER_SERVICE_ACCOUNT),
        ("Role", is, names::READER_SERVICE_ACCOUNT),
        ("ClusterRoleBinding", "", names::READER_SERVICE_ACCOUNT),
        ("ClusterRole", "", names::READER_SERVICE_ACCOUNT),
        ("Secret", fs, names::PEERS_SECRET),
        ("ServiceAccount", fs, names::READER_SERVICE_ACCOUNT),
    ]
}

/// `Kind namespace/name`, or `Kind name` for cluster-scoped objects.
fn describe(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

fn leave_permissions() -> Vec<Permission> {
    let p = |verb, group, resource, namespace| Permission {
        verb,
        group,
        resource,
        subresource: None,
        namespace,
    };
    let (fs, is) = (Some(names::NAMESPACE), Some(names::ISTIO_NAMESPACE));
    let rbac = "rbac.authorization.k8s.io";
    vec![
        p("delete", federator_api::GROUP, "clustertrusts", fs),
        p("list", federator_api::GROUP, "clustertrusts", None),
        p("delete", "apps", "deployments", fs),
        p("delete", rbac, "rolebindings", fs),
        p("delete", rbac, "rolebindings", is),
        p("delete", rbac, "roles", fs),
        p("delete", rbac, "roles", is),
        p("delete", "", "secrets", fs),
        p("delete", "", "serviceaccounts", fs),
        p("delete", rbac, "clusterroles", None),
        p("delete", rbac, "clusterrolebindings", None),
        // federator's remote secrets in istio-system.
        p("list", "", "secrets", is),
        p("delete", "", "secrets", is),
        p(
            "delete",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
    ]
}

/// Deletes `name`, `Ok(true)` if it existed.
async fn delete_if_present<K>(api: &Api<K>, name: &str, what: &str) -> Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(Error::kube(&format!("delete {what}"), e)),
    }
}

fn cacerts_left(ct: &ClusterTrust) -> CacertsLeft {
    CacertsLeft {
        trust_domain: ct.spec.trust_domain.clone(),
        trusts: ct
            .spec
            .bundle
            .iter()
            .map(|e| e.trust_domain.clone())
            .collect(),
        ca_not_after: ct
            .status
            .as_ref()
            .and_then(|s| s.installed.as_ref())
            .map(|i| i.not_after.0.to_string()),
    }
}

/// Removes everything `join` installed in the member, with its admin credential (`leave
/// --kubeconfig`): the exchange object, the agent Deployment, the Roles and RoleBindings of
/// the agent and the hub, the agent's key Secret, both ServiceAccounts (which revokes the
/// hub's token), and the `ClusterTrust` CRD when no `ClusterTrust` is left anywhere in the
/// cluster. `istio-system/cacerts` and the mesh config are left as they are.
async fn remove_member_objects(member: &Client, report: &mut LeaveReport) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    require(
        member,
        &leave_permissions(),
        "the kubeconfig for the cluster",
        "for leave --kubeconfig",
    )
    .await?;
    let trusts: Api<ClusterTrust> = Api::namespaced(member.clone(), names::NAMESPACE);
    match trusts.get_opt(names::CLUSTER_TRUST).await {
        Ok(Some(ct)) => report.cacerts = Some(cacerts_left(&ct)),
        Ok(None) => {}
        // No such resource: an earlier leave removed the CRD (and was interrupted after).
        Err(e) if federator_api::plumbing::is_status(&e, 404) => {}
        Err(e) => return Err(Error::kube("read ClusterTrust", e)),
    }
    for (kind, ns, name) in installed_objects() {
        let what = describe(kind, ns, name);
        let gone = match kind {
            "ClusterTrust" => delete_if_present(&trusts, name, &what).await?,
            "Deployment" => {
                delete_if_present(
                    &Api::<Deployment>::namespaced(member.clone(), ns),
                    name,
                    &what,
                )
                .await?
            }
            "RoleBinding" => {
                delete_if_present(
                    &Api::<RoleBinding>::namespaced(member.clone(), ns),
                    name,
                    &what,
                )
                .await?
            }
            "Role" => {
                delete_if_present(&Api::<Role>::namespaced(member.clone(), ns), name, &what).await?
            }
            "Secret" => {
                delete_if_present(&Api::<Secret>::namespaced(member.clone(), ns), name, &what)
                    .await?
            }
            "ClusterRole" => {
                delete_if_present(&Api::<ClusterRole>::all(member.clone()), name, &what).await?
            }
            "ClusterRoleBinding" => {
                delete_if_present(&Api::<ClusterRoleBinding>::all(member.clone()), name, &what)
                    .await?
            }
            _ => {
                let sas = Api::<ServiceAccount>::namespaced(member.clone(), ns);
                let gone = delete_if_present(&sas, name, &what).await?;
                if name == names::HUB_SERVICE_ACCOUNT {
                    report.credential_revoked = true;
                }
                gone
            }
        };
        if gone {
            report.removed.push(what);
        }
    }
    // The remote secrets the agent wrote: this cluster no longer discovers the others.
    let istio: Api<Secret> = Api::namespaced(member.clone(), names::ISTIO_NAMESPACE);
    let selector = format!(
        "{}={},{}={}",
        names::MANAGED_BY_LABEL.0,
        names::MANAGED_BY_LABEL.1,
        federator_api::remote::MULTI_CLUSTER_LABEL.0,
        federator_api::remote::MULTI_CLUSTER_LABEL.1
    );
    let ours = istio
        .list_metadata(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list the remote secrets", e))?;
    for s in ours.items {
        let name = s.metadata.name.unwrap_or_default();
        let what = format!("Secret {}/{name}", names::ISTIO_NAMESPACE);
        if delete_if_present(&istio, &name, &what).await? {
            report.removed.push(what);
        }
    }
    let remaining = Api::<ClusterTrust>::all(member.clone())
        .list(&kube::api::ListParams::default())
        .await;
    let crd_name = ClusterTrust::crd_name();
    match remaining {
        Ok(list) if list.items.is_empty() => {
            let crds: Api<CustomResourceDefinition> = Api::all(member.clone());
            if delete_if_present(&crds, crd_name, &format!("CRD {crd_name}")).await? {
                report
                    .removed
                    .push(format!("CustomResourceDefinition {crd_name}"));
            }
        }
        Ok(list) => report.left_behind.push(format!(
            "CustomResourceDefinition {crd_name} (still used by {} other ClusterTrust objects)",
            list.items.len()
        )),
        // The CRD is gone already.
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(Error::kube("list ClusterTrusts", e)),
    }
    Ok(())
}

/// Removes a member: deletes the MemberCluster and credential on the hub (`serve` then
/// removes its trust domain's roots from every other member, when no one else uses it) and
/// cleans up inside the member.
///
/// With `member_admin` (an admin kubeconfig for the member) everything `join` installed there
/// is removed ([`remove_member_objects`]); this also works when the cluster is no member any
/// more (a second `leave` to finish the clean-up). Without it, the hub's own credential
/// deletes the exchange object and revokes itself (best effort), and the report lists what
/// stays. Either way `istio-system/cacerts` stays: istiod keeps running on it.
pub async fn leave(
    hub: &Client,
    name: &ClusterName,
    member_admin: Option<&ClientSource>,
) -> Result<LeaveReport> {
    let members: Api<MemberCluster> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let secret_name = names::member_credential_secret(name.as_str());
    let member = members
        .get_opt(name.as_str())
        .await
        .map_err(|e| Error::kube("read MemberCluster", e))?;
    // A leave interrupted after the MemberCluster was deleted leaves the hub's Secrets for it:
    // running leave again finishes it.
    let mut leftover = false;
    for secret in [
        &secret_name,
        &names::reader_credential_secret(name.as_str()),
    ] {
        leftover |= secrets
            .get_metadata_opt(secret)
            .await
            .map_err(|e| Error::kube("read the member credential", e))?
            .is_some();
    }
    if member.is_none() && member_admin.is_none() && !leftover {
        return Err(Error::Usage(format!(
            "cluster {name} is not a member (see `federator status`); to clean up what join left in it, run leave again with --kubeconfig ADMIN-KUBECONFIG"
        )));
    }
    let mut report = LeaveReport {
        was_member: member.is_some(),
        ..LeaveReport::default()
    };
    if let Some(member) = &member {
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
            report.shared_trust_domain =
                Some((TrustDomain::new(&member.spec.trust_domain)?, sharing));
        }
    }

    match member_admin {
        Some(source) => {
            // Reach the member and check permissions before changing anything on the hub.
            let config = k::config_from(source).await?;
            let server = k::server_of(&config);
            let client = k::client(&config, name.as_str())?;
            k::check_reachable(&client, &server, &format!("cluster {name}")).await?;
            remove_member_objects(&client, &mut report).await?;
            federator_api::failpoint!("leave.after-member-objects");
        }
        None => {
            if let Some(stored) = member_access::stored_kubeconfig(hub, &secret_name).await? {
                let result: Result<()> = async {
                    let c = stored.client(name.as_str()).await?;
                    let trusts: Api<ClusterTrust> = Api::namespaced(c.clone(), names::NAMESPACE);
                    let sas: Api<ServiceAccount> = Api::namespaced(c, names::NAMESPACE);
                    if let Ok(Some(ct)) = trusts.get_opt(names::CLUSTER_TRUST).await {
                        report.cacerts = Some(cacerts_left(&ct));
                    }
                    if delete_if_present(&trusts, names::CLUSTER_TRUST, "ClusterTrust").await? {
                        report.removed.push(format!(
                            "ClusterTrust {}/{}",
                            names::NAMESPACE,
                            names::CLUSTER_TRUST
                        ));
                    }
                    // The reader identity first (the hub's own credential goes last): the
                    // other members' istiods can no longer read this cluster.
                    if delete_if_present(
                        &sas,
                        names::READER_SERVICE_ACCOUNT,
                        "the reader ServiceAccount",
                    )
                    .await
                    .unwrap_or(false)
                    {
                        report.removed.push(format!(
                            "ServiceAccount {}/{}",
                            names::NAMESPACE,
                            names::READER_SERVICE_ACCOUNT
                        ));
                    }
                    sas.delete(names::HUB_SERVICE_ACCOUNT, &DeleteParams::default())
                        .await
                        .map_err(|e| Error::kube("revoke the hub's ServiceAccount", e))?;
                    report.removed.push(format!(
                        "ServiceAccount {}/{}",
                        names::NAMESPACE,
                        names::HUB_SERVICE_ACCOUNT
                    ));
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
            report.left_behind = installed_objects()
                .into_iter()
                .filter(|(kind, ns, obj)| {
                    *kind != "ClusterTrust" && !report.removed.contains(&describe(kind, ns, obj))
                })
                .map(|(kind, ns, obj)| describe(kind, ns, obj))
                .chain([format!(
                    "CustomResourceDefinition {}",
                    ClusterTrust::crd_name()
                )])
                .collect();
        }
    }

    if report.was_member {
        members
            .delete(name.as_str(), &DeleteParams::default())
            .await
            .map_err(|e| Error::kube("delete MemberCluster", e))?;
        federator_api::failpoint!("leave.after-member-cluster");
    }
    for secret in [secret_name, names::reader_credential_secret(name.as_str())] {
        match secrets.delete(&secret, &DeleteParams::default()).await {
            Ok(_) => report.removed.push(format!(
                "Secret {}/{secret} on the hub (a credential for the cluster)",
                names::NAMESPACE
            )),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::kube("delete the member credential", e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_removes_what_join_installs() {
        let objects = installed_objects();
        // Every Role join applies has its binding and is removed.
        for r in member_roles(true) {
            let ns = r.metadata.namespace.as_deref().unwrap();
            let n = r.metadata.name.as_deref().unwrap();
            assert!(objects.contains(&("Role", ns, n)), "{ns}/{n}");
            assert!(objects.contains(&("RoleBinding", ns, n)), "{ns}/{n}");
        }
        for sa in [
            names::AGENT_SERVICE_ACCOUNT,
            names::HUB_SERVICE_ACCOUNT,
            names::READER_SERVICE_ACCOUNT,
        ] {
            assert!(objects.contains(&("ServiceAccount", names::NAMESPACE, sa)));
        }
        assert!(objects.contains(&("Deployment", names::NAMESPACE, names::AGENT_DEPLOYMENT)));
        // cacerts is never on the list.
        assert!(!objects.iter().any(|(_, _, n)| *n == names::CACERTS_SECRET));
    }

    #[test]
    fn the_agent_deployment_carries_the_hash_of_its_spec() {
        let a = agent_deployment("img:1", "east").unwrap();
        let b = agent_deployment("img:2", "east").unwrap();
        let hash =
            |d: &Deployment| d.metadata.annotations.as_ref().unwrap()[SPEC_HASH_ANNOTATION].clone();
        assert_eq!(hash(&a), hash(&agent_deployment("img:1", "east").unwrap()));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(
            a.metadata.labels.as_ref().unwrap()[names::MANAGED_BY_LABEL.0],
            names::MANAGED_BY_LABEL.1
        );
    }
}
