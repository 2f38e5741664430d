//! Kubernetes plumbing shared by the hub's commands: clients from kubeconfigs, server-side
//! apply, CRD installation, and permission checks with SelfSubjectAccessReview.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use federator_api::names;

use crate::{Error, Result};

/// Where a client's configuration comes from.
#[derive(Clone, Debug, Default)]
pub struct ClientSource {
    /// A kubeconfig file; `None` means in-cluster config, then `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// A context in that kubeconfig; `None` means its current context.
    pub context: Option<String>,
}

/// Builds a client configuration from a source.
pub async fn config_from(source: &ClientSource) -> Result<Config> {
    let opts = KubeConfigOptions {
        context: source.context.clone(),
        ..KubeConfigOptions::default()
    };
    match &source.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                Error::Usage(format!(
                    "{}: cannot read the kubeconfig: {e}",
                    path.display()
                ))
            })?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
        }
        None if source.context.is_some() => Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| Error::Usage(format!("kubeconfig: {e}"))),
        None => Config::infer().await.map_err(|e| {
            Error::Usage(format!(
                "no cluster configured (not in a cluster, no kubeconfig): {e}"
            ))
        }),
    }
}

/// Parses a kubeconfig held in memory (a member credential), with no file or environment
/// access; `what` names it in the error. The fuzz target `kubeconfig` calls this.
pub fn parse_kubeconfig(yaml: &str, what: &str) -> Result<Kubeconfig> {
    Kubeconfig::from_yaml(yaml)
        .map_err(|e| Error::Usage(format!("{what}: malformed kubeconfig: {e}")))
}

/// Builds a client from a kubeconfig held in memory (a member credential).
pub async fn client_from_kubeconfig_yaml(yaml: &str, what: &str) -> Result<(Client, Config)> {
    let kc = parse_kubeconfig(yaml, what)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Usage(format!("{what}: {e}")))?;
    let client = Client::try_from(config.clone()).map_err(|e| Error::kube(what, e))?;
    Ok((client, config))
}

/// A client for a configuration.
pub fn client(config: &Config, what: &str) -> Result<Client> {
    Client::try_from(config.clone()).map_err(|e| Error::kube(what, e))
}

/// Checks that the API server answers, with a message that says what to check when not.
pub async fn check_reachable(client: &Client, server: &str, what: &str) -> Result<()> {
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Unreachable(format!(
            "{what}: cannot reach the API server at {server}: {e}; check that the cluster is up and the kubeconfig's server and credentials are right"
        ))),
        Err(_) => Err(Error::Unreachable(format!(
            "{what}: the API server at {server} did not answer within 10s; check that the cluster is up and reachable"
        ))),
    }
}

/// One permission to check: verb, resource (with optional subresource), group, namespace.
#[derive(Clone, Debug)]
pub struct Permission {
    /// Verb, e.g. `create`.
    pub verb: &'static str,
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource, e.g. `roles`.
    pub resource: &'static str,
    /// Subresource, e.g. `token`.
    pub subresource: Option<&'static str>,
    /// Namespace, `None` for cluster scope.
    pub namespace: Option<&'static str>,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let res = match (self.group, self.subresource) {
            ("", None) => self.resource.to_owned(),
            ("", Some(s)) => format!("{}/{s}", self.resource),
            (g, None) => format!("{}.{g}", self.resource),
            (g, Some(s)) => format!("{}.{g}/{s}", self.resource),
        };
        match self.namespace {
            Some(ns) => write!(f, "{} {res} in namespace {ns}", self.verb),
            None => write!(f, "{} {res} (cluster-wide)", self.verb),
        }
    }
}

/// Returns the permissions the client's user lacks (asked with SelfSubjectAccessReview).
pub async fn missing_permissions(
    client: &Client,
    wanted: &[Permission],
) -> Result<Vec<Permission>> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for p in wanted {
        let review = SelfSubjectAccessReview {
            metadata: ObjectMeta::default(),
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(p.verb.to_owned()),
                    group: Some(p.group.to_owned()),
                    resource: Some(p.resource.to_owned()),
                    subresource: p.subresource.map(str::to_owned),
                    namespace: p.namespace.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                non_resource_attributes: None,
            },
            status: None,
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Error::kube("SelfSubjectAccessReview", e))?;
        if !answer.status.map(|s| s.allowed).unwrap_or(false) {
            missing.push(p.clone());
        }
    }
    Ok(missing)
}

/// Server-side applies an object with the hub's field manager.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(names::HUB_FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| {
        Error::kube(
            &format!("apply {} {name}", K::kind(&K::DynamicType::default())),
            e,
        )
    })
}

/// Ensures a namespace exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("get namespace", e))?
        .is_some()
    {
        return Ok(());
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(managed_labels()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(&format!("create namespace {name}"), e)),
    }
}

/// Installs (server-side applies) CRDs and waits until they are established.
pub async fn install_crds(client: &Client, crds: Vec<CustomResourceDefinition>) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let current = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("get CRD", e))?;
        // Apply only when the spec differs: a re-run makes no write.
        if current.as_ref().map(|c| &c.spec) != Some(&crd.spec) {
            apply(&api, &crd).await?;
        }
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .map_err(|_| Error::Unreachable(format!("CRD {name} was not established within 30s")))?
            .map_err(|e| Error::Unreachable(format!("waiting for CRD {name}: {e}")))?;
    }
    Ok(())
}

/// The labels federator puts on what it creates.
pub fn managed_labels() -> std::collections::BTreeMap<String, String> {
    [(
        names::MANAGED_BY_LABEL.0.to_owned(),
        names::MANAGED_BY_LABEL.1.to_owned(),
    )]
    .into()
}

/// The server URL of a kubeconfig's selected context (for messages and the stored credential).
pub fn server_of(config: &Config) -> String {
    config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned()
}

/// Reads a kubeconfig file for a member, with a usage error naming it.
pub fn read_kubeconfig_file(path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(Error::Usage(format!(
            "{}: kubeconfig not found",
            path.display()
        )));
    }
    Ok(())
}

/// The federation's `Federation` object; a clear error when the hub is not initialised.
pub async fn federation(hub: &Client) -> Result<federator_api::hub::Federation> {
    let feds: Api<federator_api::hub::Federation> = Api::namespaced(hub.clone(), names::NAMESPACE);
    feds.get_opt(names::FEDERATION)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            Error::Refused("the hub is not initialised: run `federator init` first".into())
        })
}
