//! The hub's credentials for members: least-privilege ServiceAccount tokens, stored as
//! kubeconfigs in hub Secrets (`federator-system/federator-member-<cluster>`).

use std::time::Duration;

use federator_api::member::ClusterTrust;
use federator_api::names;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Config};
use time::OffsetDateTime;

use crate::{Error, Result};

/// Annotation on a credential Secret: when its token expires (RFC 3339).
pub const TOKEN_EXPIRES_ANNOTATION: &str = "federator.io/token-expires";

/// A kubeconfig (YAML) for `server` with a bearer token, trusting the CA of `config`.
pub fn token_kubeconfig(
    cluster: &str,
    config: &Config,
    server: &str,
    token: &str,
) -> Result<String> {
    use std::fmt::Write as _;
    let mut ca_pem = String::new();
    for der in config.root_cert.iter().flatten() {
        ca_pem += &federator_core::cert::to_pem([der.as_slice()]);
    }
    let mut cluster_entry = serde_json::json!({ "server": server });
    if !ca_pem.is_empty() {
        cluster_entry["certificate-authority-data"] = base64(ca_pem.as_bytes()).into();
    }
    if config.accept_invalid_certs {
        cluster_entry["insecure-skip-tls-verify"] = true.into();
    }
    if let Some(name) = &config.tls_server_name {
        cluster_entry["tls-server-name"] = name.clone().into();
    }
    let kc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": cluster, "cluster": cluster_entry }],
        "users": [{ "name": format!("{cluster}-federator"), "user": { "token": token } }],
        "contexts": [{ "name": cluster, "context": { "cluster": cluster, "user": format!("{cluster}-federator") } }],
        "current-context": cluster,
    });
    let mut out = String::new();
    let _ = write!(
        out,
        "{}",
        serde_yaml::to_string(&kc).map_err(|e| Error::Encode(e.to_string()))?
    );
    Ok(out)
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Requests a token for a ServiceAccount in `federator-system` of the member.
/// Returns the token and its expiry.
pub async fn request_token(
    member: &Client,
    service_account: &str,
    ttl: Duration,
) -> Result<(String, OffsetDateTime)> {
    let api: Api<ServiceAccount> = Api::namespaced(member.clone(), names::NAMESPACE);
    let req = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            bound_object_ref: None,
        }),
        status: None,
    };
    let resp = api
        .create_token_request(service_account, &PostParams::default(), &req)
        .await
        .map_err(|e| Error::kube(&format!("request a token for {service_account}"), e))?;
    let status = resp.status.ok_or_else(|| {
        Error::Refused("the API server returned a TokenRequest without a token".into())
    })?;
    let token = status.token.ok_or_else(|| {
        Error::Refused("the API server returned a TokenRequest without a token".into())
    })?;
    let expires = status
        .expiration_timestamp
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
        .unwrap_or_else(|| OffsetDateTime::now_utc() + ttl);
    Ok((token, expires))
}

/// Checks that a stored credential works: it can read the member's `ClusterTrust`.
pub async fn credential_works(member: &Client) -> Result<()> {
    let api: Api<ClusterTrust> = Api::namespaced(member.clone(), names::NAMESPACE);
    api.get_opt(names::CLUSTER_TRUST)
        .await
        .map(|_| ())
        .map_err(|e| Error::kube("read ClusterTrust with the hub's credential", e))
}

/// Reads a member's stored kubeconfig from the hub.
pub async fn stored_kubeconfig(
    hub: &Client,
    secret_name: &str,
) -> Result<Option<(String, Option<OffsetDateTime>)>> {
    let api: Api<Secret> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let Some(secret) = api
        .get_opt(secret_name)
        .await
        .map_err(|e| Error::kube("read a member credential", e))?
    else {
        return Ok(None);
    };
    let yaml = secret
        .data
        .as_ref()
        .and_then(|d| d.get(names::KUBECONFIG_KEY))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .ok_or_else(|| {
            Error::Refused(format!(
                "credential Secret {secret_name} has no {} key",
                names::KUBECONFIG_KEY
            ))
        })?;
    let expires = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOKEN_EXPIRES_ANNOTATION))
        .and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
    Ok(Some((yaml, expires)))
}

/// Stores (creates or replaces) a member's kubeconfig on the hub.
pub async fn store_kubeconfig(
    hub: &Client,
    secret_name: &str,
    cluster: &str,
    yaml: &str,
    expires: OffsetDateTime,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: Some(names::NAMESPACE.to_owned()),
            labels: Some(
                [
                    (
                        names::MANAGED_BY_LABEL.0.to_owned(),
                        names::MANAGED_BY_LABEL.1.to_owned(),
                    ),
                    ("federator.io/cluster".to_owned(), cluster.to_owned()),
                ]
                .into(),
            ),
            annotations: Some(
                [(
                    TOKEN_EXPIRES_ANNOTATION.to_owned(),
                    federator_core::cert::rfc3339(expires),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [(
                names::KUBECONFIG_KEY.to_owned(),
                ByteString(yaml.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    super::kube::apply(&api, &secret).await.map(|_| ())
}
