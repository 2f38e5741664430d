//! The hub's side of the Kubernetes plumbing (the rest is [`federator_api::plumbing`], shared
//! with the agent): clients from the hub's sources, CRD installation, permission checks with
//! SelfSubjectAccessReview, and the Federation object.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::ResourceAttributes;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, CustomResourceDefinitionSpec,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use federator_api::hub::Federation;
use federator_api::{names, plumbing};

use crate::{Error, Result};

/// Where a client's configuration comes from.
#[derive(Clone, Debug, Default)]
pub struct ClientSource {
    /// A kubeconfig file; `None` means `$KUBECONFIG` / `~/.kube/config`, else the in-cluster
    /// config (kube's `Config::infer`).
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
        Some(path) => plumbing::config_from_file(path, source.context.as_deref())
            .await
            .map_err(|source| Error::Kubeconfig {
                what: path.display().to_string(),
                source,
            }),
        None if source.context.is_some() => {
            Config::from_kubeconfig(&opts)
                .await
                .map_err(|source| Error::Kubeconfig {
                    what: "kubeconfig".into(),
                    source,
                })
        }
        None => Config::infer().await.map_err(|e| {
            Error::Usage(format!(
                "no cluster configured (not in a cluster, no kubeconfig): {e}"
            ))
        }),
    }
}

/// Parses a kubeconfig held in memory (a member credential) the way
/// [`client_from_kubeconfig_yaml`] does, with no file or environment access; `what` names it
/// in the error. The fuzz target `kubeconfig` calls this.
pub fn parse_kubeconfig(yaml: &str, what: &str) -> Result<Kubeconfig> {
    Kubeconfig::from_yaml(yaml).map_err(|source| Error::Kubeconfig {
        what: what.to_owned(),
        source,
    })
}

/// Builds a client from a kubeconfig held in memory (a member credential).
pub async fn client_from_kubeconfig_yaml(yaml: &str, what: &str) -> Result<Client> {
    let config = plumbing::config_from_yaml(yaml)
        .await
        .map_err(|source| Error::Kubeconfig {
            what: what.to_owned(),
            source,
        })?;
    client(&config, what)
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
    let mut missing = Vec::new();
    for p in wanted {
        let attributes = ResourceAttributes {
            verb: Some(p.verb.to_owned()),
            group: Some(p.group.to_owned()),
            resource: Some(p.resource.to_owned()),
            subresource: p.subresource.map(str::to_owned),
            namespace: p.namespace.map(str::to_owned),
            ..ResourceAttributes::default()
        };
        let allowed = plumbing::access_allowed(client, attributes)
            .await
            .map_err(|e| Error::kube("SelfSubjectAccessReview", e))?;
        if !allowed {
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
    plumbing::apply(api, obj, names::HUB_FIELD_MANAGER)
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
            labels: Some(plumbing::managed_labels()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    plumbing::create_or_accept(&api, &PostParams::default(), &ns)
        .await
        .map(|_| ())
        .map_err(|e| Error::kube(&format!("create namespace {name}"), e))
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
        // Apply only when the spec differs from what the API server stores for ours: a re-run
        // makes no write (and needs no write right: the Helm chart installs the CRDs, and its
        // init Job may only read them).
        if current.as_ref().map(|c| &c.spec) != Some(&with_server_defaults(crd.spec.clone())) {
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

/// A CRD spec as the API server stores it: apiextensions/v1 defaults `names.singular`,
/// `names.listKind` and `conversion` (`SetDefaults_CustomResourceDefinitionSpec`), which the
/// derived CRDs leave out, so a comparison with the spec as written would differ every time.
fn with_server_defaults(mut spec: CustomResourceDefinitionSpec) -> CustomResourceDefinitionSpec {
    let names = &mut spec.names;
    if names.singular.as_deref().unwrap_or_default().is_empty() {
        names.singular = Some(names.kind.to_lowercase());
    }
    if names.list_kind.as_deref().unwrap_or_default().is_empty() && !names.kind.is_empty() {
        names.list_kind = Some(format!("{}List", names.kind));
    }
    if spec.conversion.is_none() {
        spec.conversion = Some(CustomResourceConversion {
            strategy: "None".to_owned(),
            webhook: None,
        });
    }
    spec
}

/// The server URL of a kubeconfig's selected context (for messages and the stored credential).
pub fn server_of(config: &Config) -> String {
    plumbing::Endpoint::of(config).server
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

/// The federation's `Federation` object, if the hub is initialised. A hub without the CRD
/// (404) has none; any other failure (403, unreachable) is reported as what it is.
pub async fn find_federation(hub: &Client) -> Result<Option<Federation>> {
    let feds: Api<Federation> = Api::namespaced(hub.clone(), names::NAMESPACE);
    match feds.get_opt(names::FEDERATION).await {
        Ok(found) => Ok(found),
        Err(e) if plumbing::is_status(&e, 404) => Ok(None),
        Err(e) => Err(Error::kube("read the Federation", e)),
    }
}

/// The federation's `Federation` object; [`Error::NotInitialised`] when there is none.
pub async fn federation(hub: &Client) -> Result<Federation> {
    find_federation(hub).await?.ok_or(Error::NotInitialised)
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn server_defaults_fill_only_what_the_api_server_defaults() {
        let spec = Federation::crd().spec;
        let stored = with_server_defaults(spec.clone());
        assert_eq!(stored.names.list_kind.as_deref(), Some("FederationList"));
        assert_eq!(stored.names.singular.as_deref(), Some("federation"));
        assert_eq!(
            stored.conversion.as_ref().map(|c| c.strategy.as_str()),
            Some("None")
        );
        assert_eq!(
            stored.versions, spec.versions,
            "the schema is left as it is"
        );
        assert_eq!(with_server_defaults(stored.clone()), stored, "idempotent");
    }
}
