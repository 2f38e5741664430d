//! The hub's credentials for members: least-privilege ServiceAccount tokens, stored as
//! kubeconfigs in hub Secrets (`federator-system/federator-member-<cluster>`).

use std::time::Duration;

use federator_api::member::ClusterTrust;
use federator_api::{names, plumbing};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::Kubeconfig;
use kube::{Client, Config};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::{Error, Result};

/// Annotation on a credential Secret: when its token expires (RFC 3339).
pub const TOKEN_EXPIRES_ANNOTATION: &str = "federator.io/token-expires";
/// Annotation on a credential Secret: when its token was issued (RFC 3339).
pub const TOKEN_ISSUED_ANNOTATION: &str = "federator.io/token-issued";

/// A member credential as stored on the hub. `Debug` never shows the token.
#[derive(Clone, Debug)]
pub struct StoredCredential {
    /// The kubeconfig (it holds the token).
    pub kubeconfig: SecretString,
    /// When the token was issued.
    pub issued: Option<OffsetDateTime>,
    /// When the token expires.
    pub expires: Option<OffsetDateTime>,
}

impl StoredCredential {
    /// Whether the token should be replaced: two thirds of its lifetime have passed (or, when
    /// its issue time is unknown, less than 30 days are left).
    pub fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        match (self.issued, self.expires) {
            (Some(i), Some(e)) => now >= i + (e - i) * (2.0 / 3.0),
            (None, Some(e)) => e - now < time::Duration::days(30),
            _ => false,
        }
    }

    /// When [`StoredCredential::needs_renewal`] turns true, when known.
    pub fn renew_at(&self) -> Option<OffsetDateTime> {
        match (self.issued, self.expires) {
            (Some(i), Some(e)) => Some(renewal_due(i, e, None)),
            (None, Some(e)) => Some(e - time::Duration::days(30)),
            _ => None,
        }
    }

    /// When the token is due if it must also be renewed once `after` old: the earlier of
    /// [`StoredCredential::renew_at`] and its issue time plus `after` (without its issue time,
    /// [`StoredCredential::renew_at`]).
    pub fn renew_at_or_after(&self, after: Option<Duration>) -> Option<OffsetDateTime> {
        match (self.issued, self.expires) {
            (Some(i), Some(e)) => Some(renewal_due(i, e, after)),
            _ => self.renew_at(),
        }
    }

    /// The lifetime to ask for when renewing: the same as this token's (90 days if unknown).
    pub fn lifetime(&self) -> Duration {
        match (self.issued, self.expires) {
            (Some(i), Some(e)) if e > i => {
                Duration::try_from(e - i).unwrap_or(Duration::from_secs(90 * 86400))
            }
            _ => Duration::from_secs(90 * 86400),
        }
    }

    /// The same kubeconfig with another token.
    pub fn with_token(&self, token: &str) -> Result<String> {
        let mut kc = Kubeconfig::from_yaml(self.kubeconfig.expose_secret()).map_err(|source| {
            Error::Kubeconfig {
                what: "the stored kubeconfig".into(),
                source,
            }
        })?;
        if !plumbing::replace_token(&mut kc, token) {
            return Err(Error::Refused("the stored kubeconfig has no user".into()));
        }
        plumbing::kubeconfig_yaml(&kc).map_err(Error::encode("the kubeconfig"))
    }

    /// The API server this credential points at.
    pub async fn server(&self) -> Result<String> {
        let config = plumbing::config_from_yaml(self.kubeconfig.expose_secret())
            .await
            .map_err(|source| Error::Kubeconfig {
                what: "the stored kubeconfig".into(),
                source,
            })?;
        Ok(plumbing::Endpoint::of(&config).server)
    }

    /// The same token for the API server of `config` (its address and CA): to check a
    /// credential from where `join` runs when the hub reaches the member elsewhere.
    pub fn with_server(&self, config: &Config) -> Result<String> {
        let kc = Kubeconfig::from_yaml(self.kubeconfig.expose_secret()).map_err(|source| {
            Error::Kubeconfig {
                what: "the stored kubeconfig".into(),
                source,
            }
        })?;
        let token = kc
            .auth_infos
            .iter()
            .find_map(|a| a.auth_info.as_ref()?.token.clone())
            .ok_or_else(|| Error::Refused("the stored kubeconfig has no token".into()))?;
        token_kubeconfig(
            kc.clusters.first().map_or("member", |c| c.name.as_str()),
            config,
            token.expose_secret(),
        )
    }

    /// A client for the member with this credential (`what` names it in errors).
    pub async fn client(&self, what: &str) -> Result<Client> {
        super::kube::client_from_kubeconfig_yaml(self.kubeconfig.expose_secret(), what).await
    }

    /// Whether `other` holds another kubeconfig (a re-join or another replica's renewal).
    pub fn kubeconfig_differs(&self, other: &StoredCredential) -> bool {
        self.kubeconfig.expose_secret() != other.kubeconfig.expose_secret()
    }
}

/// When a token issued at `issued` that expires at `expires` is due for renewal: at two thirds
/// of its lifetime, or once `after` old when that is sooner.
pub fn renewal_due(
    issued: OffsetDateTime,
    expires: OffsetDateTime,
    after: Option<Duration>,
) -> OffsetDateTime {
    let usual = issued + (expires - issued) * (2.0 / 3.0);
    after.map_or(usual, |a| usual.min(issued + a))
}

/// A kubeconfig (YAML) for the API server of `config` with a bearer token, trusting the CA of
/// `config`.
pub fn token_kubeconfig(cluster: &str, config: &Config, token: &str) -> Result<String> {
    let kc = plumbing::token_kubeconfig(cluster, &plumbing::Endpoint::of(config), token);
    plumbing::kubeconfig_yaml(&kc).map_err(Error::encode("the kubeconfig"))
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

/// The label selector of the Secrets federator manages on the hub (stored credentials,
/// reader kubeconfigs).
pub fn managed_selector() -> String {
    format!(
        "{}={}",
        names::MANAGED_BY_LABEL.0,
        names::MANAGED_BY_LABEL.1
    )
}

/// The reader kubeconfigs stored on the hub (`federator-reader-<cluster>`): cluster →
/// kubeconfig, for every member that takes part in discovery and has one yet.
pub async fn reader_kubeconfigs(
    hub: &Client,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let api: Api<Secret> = Api::namespaced(hub.clone(), names::NAMESPACE);
    let list = api
        .list(&kube::api::ListParams::default().labels(&managed_selector()))
        .await
        .map_err(|e| Error::kube("list the reader credentials", e))?;
    Ok(reader_kubeconfigs_in(&list.items))
}

/// The reader kubeconfigs among `secrets` (the hub's managed Secrets): cluster → kubeconfig.
pub fn reader_kubeconfigs_in<S: std::borrow::Borrow<Secret>>(
    secrets: &[S],
) -> std::collections::BTreeMap<String, Vec<u8>> {
    secrets
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter_map(|s: &Secret| {
            let cluster = s
                .metadata
                .name
                .as_deref()?
                .strip_prefix(names::READER_CREDENTIAL_PREFIX)?;
            let kubeconfig = plumbing::secret_data(s).remove(names::KUBECONFIG_KEY)?;
            Some((cluster.to_owned(), kubeconfig))
        })
        .collect()
}

/// Reads a member's stored credential from the hub.
pub async fn stored_kubeconfig(
    hub: &Client,
    secret_name: &str,
) -> Result<Option<StoredCredential>> {
    let api: Api<Secret> = Api::namespaced(hub.clone(), names::NAMESPACE);
    api.get_opt(secret_name)
        .await
        .map_err(|e| Error::kube("read a member credential", e))?
        .map(|secret| stored_in(&secret, secret_name))
        .transpose()
}

/// The stored credential (or reader kubeconfig) a Secret named `secret_name` holds.
pub fn stored_in(secret: &Secret, secret_name: &str) -> Result<StoredCredential> {
    let kubeconfig = secret
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
    let time_of = |key: &str| {
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
    };
    Ok(StoredCredential {
        kubeconfig: kubeconfig.into(),
        issued: time_of(TOKEN_ISSUED_ANNOTATION),
        expires: time_of(TOKEN_EXPIRES_ANNOTATION),
    })
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
    let mut labels = plumbing::managed_labels();
    labels.insert("federator.io/cluster".to_owned(), cluster.to_owned());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: Some(names::NAMESPACE.to_owned()),
            labels: Some(labels),
            annotations: Some(
                [
                    (
                        TOKEN_EXPIRES_ANNOTATION.to_owned(),
                        federator_core::cert::rfc3339(expires),
                    ),
                    (
                        TOKEN_ISSUED_ANNOTATION.to_owned(),
                        federator_core::cert::rfc3339(OffsetDateTime::now_utc()),
                    ),
                ]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn renews_after_two_thirds_of_the_lifetime() {
        let c = StoredCredential {
            kubeconfig: "users:\n- name: u\n  user:\n    token: old\n"
                .to_owned()
                .into(),
            issued: Some(t("2026-01-01T00:00:00Z")),
            expires: Some(t("2026-01-31T00:00:00Z")),
        };
        assert!(!c.needs_renewal(t("2026-01-20T00:00:00Z")));
        assert!(c.needs_renewal(t("2026-01-21T00:00:01Z")));
        assert_eq!(c.lifetime(), Duration::from_secs(30 * 86400));
        assert!(c.with_token("new").unwrap().contains("token: new"));
        assert!(!format!("{c:?}").contains("old"), "Debug redacts the token");
    }

    #[test]
    fn renews_early_once_as_old_as_asked() {
        let c = StoredCredential {
            kubeconfig: String::new().into(),
            issued: Some(t("2026-01-01T00:00:00Z")),
            expires: Some(t("2026-01-01T00:10:00Z")),
        };
        let at = |after| c.renew_at_or_after(after).unwrap();
        assert_eq!(at(None), t("2026-01-01T00:06:40Z"), "two thirds");
        assert_eq!(at(Some(Duration::from_secs(5))), t("2026-01-01T00:00:05Z"));
        assert_eq!(
            at(Some(Duration::from_secs(9 * 60))),
            t("2026-01-01T00:06:40Z"),
            "never later than two thirds"
        );
        let unknown = StoredCredential {
            issued: None,
            ..c.clone()
        };
        assert_eq!(
            unknown.renew_at_or_after(Some(Duration::from_secs(5))),
            unknown.renew_at()
        );
    }
}
