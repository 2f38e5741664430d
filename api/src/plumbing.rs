//! Kubernetes plumbing shared by the hub and the agent, so that each thing is done one way:
//! labels and metadata of what federator creates, Secret data, create-or-accept and
//! server-side apply, watches of single objects, kubeconfig loading and writing, and the
//! retry backoff.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, KubeconfigError, NamedAuthInfo,
    NamedCluster, NamedContext,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::names;

/// The labels federator puts on what it creates.
pub fn managed_labels() -> BTreeMap<String, String> {
    [(
        names::MANAGED_BY_LABEL.0.to_owned(),
        names::MANAGED_BY_LABEL.1.to_owned(),
    )]
    .into()
}

/// Metadata of an object federator creates: name, namespace, the managed-by label.
pub fn metadata(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(managed_labels()),
        ..ObjectMeta::default()
    }
}

/// A Secret's data as bytes (empty when it has none).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Secret data for the API.
pub fn byte_strings(data: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, ByteString> {
    data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()
}

/// Whether a client error is the API server's answer with this HTTP status code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Creates an object, accepting that it already exists (409): returns whether it was created.
pub async fn create_or_accept<K>(
    api: &Api<K>,
    params: &PostParams,
    obj: &K,
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    match api.create(params, obj).await {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 409) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Server-side applies an object as `field_manager`, taking over conflicting fields.
pub async fn apply<K>(api: &Api<K>, obj: &K, field_manager: &str) -> Result<K, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(obj),
    )
    .await
}

/// Server-side applies the status of object `name` of kind `K` as `field_manager`.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    status: &S,
    field_manager: &str,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&body),
    )
    .await
}

/// Whether the client's user may do what `attributes` describe (a SelfSubjectAccessReview).
pub async fn access_allowed(
    client: &kube::Client,
    attributes: ResourceAttributes,
) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(attributes),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// A watch configuration selecting one object by name (so namespaced RBAC with
/// `resourceNames` suffices).
pub fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

/// Turns a watch into one `()` per change of any of its objects (created, changed or
/// deleted), for `Controller::reconcile_all_on`. It retries with its own backoff and drops its
/// errors after logging them: a controller's trigger backoff is shared by every trigger, so an
/// error passed on would also slow down the reaction to every other watch.
pub fn changes_of<K, S>(events: S, what: String) -> impl Stream<Item = ()> + Send + 'static
where
    K: Resource + Clone + Debug + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events
        .default_backoff()
        .touched_objects()
        .filter_map(move |event| {
            let what = what.clone();
            async move {
                match event {
                    Ok(_) => Some(()),
                    Err(error) => {
                        warn!(watch = %what, %error, "watch failed; retrying with backoff");
                        None
                    }
                }
            }
        })
}

/// A client configuration from a kubeconfig file, with `context` (else its current context).
pub async fn config_from_file(
    path: &Path,
    context: Option<&str>,
) -> Result<Config, KubeconfigError> {
    let kc = Kubeconfig::read_from(path)?;
    let opts = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    Config::from_custom_kubeconfig(kc, &opts).await
}

/// A client configuration from a kubeconfig held in memory (its current context).
pub async fn config_from_yaml(yaml: &str) -> Result<Config, KubeconfigError> {
    Config::from_custom_kubeconfig(Kubeconfig::from_yaml(yaml)?, &KubeConfigOptions::default())
        .await
}

/// Where a token kubeconfig points.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// The API server URL.
    pub server: String,
    /// CA certificates to trust (PEM); empty means the system's roots.
    pub ca_pem: String,
    /// Skip TLS verification (only when the source configuration did).
    pub insecure: bool,
    /// The TLS server name, when not the server's host.
    pub tls_server_name: Option<String>,
}

impl Endpoint {
    /// The endpoint of a client configuration.
    pub fn of(config: &Config) -> Endpoint {
        let mut ca_pem = String::new();
        for der in config.root_cert.iter().flatten() {
            ca_pem += &federator_core::cert::to_pem([der.as_slice()]);
        }
        Endpoint {
            server: config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_owned(),
            ca_pem,
            insecure: config.accept_invalid_certs,
            tls_server_name: config.tls_server_name.clone(),
        }
    }
}

/// A kubeconfig with one cluster, one user authenticating with a bearer token, and one
/// context, all named after `name`.
pub fn token_kubeconfig(name: &str, endpoint: &Endpoint, token: &str) -> Kubeconfig {
    let user = format!("{name}-federator");
    Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: name.to_owned(),
            cluster: Some(Cluster {
                server: Some(endpoint.server.clone()),
                certificate_authority_data: (!endpoint.ca_pem.is_empty())
                    .then(|| base64(endpoint.ca_pem.as_bytes())),
                insecure_skip_tls_verify: endpoint.insecure.then_some(true),
                tls_server_name: endpoint.tls_server_name.clone(),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.clone(),
            auth_info: Some(AuthInfo {
                token: Some(token.to_owned().into()),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: name.to_owned(),
            context: Some(Context {
                cluster: name.to_owned(),
                user: Some(user),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(name.to_owned()),
        ..Kubeconfig::default()
    }
}

/// Replaces every user's token; returns whether the kubeconfig has a user at all.
pub fn replace_token(kubeconfig: &mut Kubeconfig, token: &str) -> bool {
    let mut any = false;
    for user in kubeconfig
        .auth_infos
        .iter_mut()
        .filter_map(|u| u.auth_info.as_mut())
    {
        user.token = Some(token.to_owned().into());
        any = true;
    }
    any
}

/// Kubeconfig YAML (it holds a credential: write it only where secrets belong).
pub fn kubeconfig_yaml(kubeconfig: &Kubeconfig) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(kubeconfig)
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Exponential retry backoff: `start`, doubling with every failure in a row, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub start: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `failures` (1 = the first retry).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        self.start.saturating_mul(1u32 << exp).min(self.max)
    }
}

/// Consecutive failures of one task, for its [`Backoff`].
#[derive(Debug, Default)]
pub struct Failures(AtomicU32);

impl Failures {
    /// Records a failure; returns how many happened in a row.
    pub fn record(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// Records a success.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            start: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(6), Duration::from_secs(32));
        assert_eq!(b.delay(7), Duration::from_secs(60));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
        let f = Failures::default();
        assert_eq!((f.record(), f.record()), (1, 2));
        f.reset();
        assert_eq!(f.record(), 1);
    }

    #[test]
    fn token_kubeconfigs_round_trip_through_kube() {
        let endpoint = Endpoint {
            server: "https://127.0.0.1:6443".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
            insecure: false,
            tls_server_name: Some("kubernetes".into()),
        };
        let mut kc = token_kubeconfig("east", &endpoint, "t0ken");
        let yaml = kubeconfig_yaml(&kc).unwrap();
        let back = Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(back.current_context.as_deref(), Some("east"));
        let cluster = back.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.tls_server_name.as_deref(), Some("kubernetes"));
        assert!(cluster.insecure_skip_tls_verify.is_none());
        assert!(yaml.contains("token: t0ken"), "{yaml}");
        assert!(replace_token(&mut kc, "n3w"));
        let yaml = kubeconfig_yaml(&kc).unwrap();
        assert!(
            yaml.contains("token: n3w") && !yaml.contains("t0ken"),
            "{yaml}"
        );
        assert!(!replace_token(&mut Kubeconfig::default(), "x"));
        // The credential never shows in Debug output.
        assert!(!format!("{kc:?}").contains("n3w"));
    }
}
