//! The Vault backend's settings: where Vault is and how the hub logs in. `init` records them
//! in the Federation (never a secret) and the hub's credential in the roots Secret; `serve`
//! decodes them back from both.

use std::collections::BTreeMap;
use std::path::PathBuf;

use federator_api::hub::{VaultAuthMethod, VaultBackend};
use secrecy::{ExposeSecret, SecretString};

use crate::{Error, Result};

/// Secret key of the hub's Vault token.
pub const VAULT_TOKEN_KEY: &str = "vault-token";
/// Secret key of the AppRole role ID.
pub const VAULT_ROLE_ID_KEY: &str = "vault-role-id";
/// Secret key of the AppRole secret ID.
pub const VAULT_SECRET_ID_KEY: &str = "vault-secret-id";
/// Where a pod's ServiceAccount token is mounted.
pub const DEFAULT_SERVICE_ACCOUNT_TOKEN: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How the hub authenticates to Vault. `Debug` never shows a secret.
#[derive(Clone, Debug)]
pub enum VaultAuth {
    /// A token.
    Token {
        /// The token.
        token: SecretString,
    },
    /// AppRole.
    AppRole {
        /// Auth mount (default `approle`).
        mount: String,
        /// Role ID (not a secret).
        role_id: String,
        /// Secret ID.
        secret_id: SecretString,
    },
    /// Kubernetes auth with a ServiceAccount JWT read from a file at each login (so projected,
    /// rotating tokens work).
    Kubernetes {
        /// Auth mount (default `kubernetes`).
        mount: String,
        /// Vault role.
        role: String,
        /// File holding the JWT.
        jwt_file: PathBuf,
    },
}

/// Where Vault is and how to use it.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// Address, e.g. `https://vault:8200`.
    pub address: String,
    /// PKI mount.
    pub mount: String,
    /// Issuer reference; `None` means the mount's default issuer.
    pub issuer: Option<String>,
    /// Vault Enterprise namespace.
    pub namespace: Option<String>,
    /// Authentication.
    pub auth: VaultAuth,
    /// CA bundle (PEM) for Vault's TLS certificate, when not a public CA.
    pub ca_pem: Option<String>,
}

impl VaultConfig {
    /// The path where `issuer` (`None`: the mount's default) signs cluster CAs.
    pub fn sign_path_of(&self, issuer: Option<&str>) -> String {
        format!(
            "{}/issuer/{}/sign-intermediate",
            self.mount,
            issuer.unwrap_or("default")
        )
    }
}

/// The Vault settings of a Federation, with the hub's credential from the roots Secret.
pub fn vault_config(v: &VaultBackend, data: &BTreeMap<String, Vec<u8>>) -> Result<VaultConfig> {
    let get = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(b).trim().to_owned())
            .ok_or_else(|| {
                Error::Refused(format!(
                    "the roots Secret lacks {k} for Vault {} auth",
                    v.auth
                ))
            })
    };
    let mount_or = |default: &str| {
        if v.auth_mount.is_empty() {
            default.to_owned()
        } else {
            v.auth_mount.clone()
        }
    };
    let auth = match v.auth {
        VaultAuthMethod::Token => VaultAuth::Token {
            token: get(VAULT_TOKEN_KEY)?.into(),
        },
        VaultAuthMethod::AppRole => VaultAuth::AppRole {
            mount: mount_or("approle"),
            role_id: get(VAULT_ROLE_ID_KEY)?,
            secret_id: get(VAULT_SECRET_ID_KEY)?.into(),
        },
        VaultAuthMethod::Kubernetes => VaultAuth::Kubernetes {
            mount: mount_or("kubernetes"),
            role: v.role.clone(),
            jwt_file: if v.jwt_path.is_empty() {
                DEFAULT_SERVICE_ACCOUNT_TOKEN.into()
            } else {
                v.jwt_path.clone().into()
            },
        },
    };
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(VaultConfig {
        address: v.address.clone(),
        mount: v.mount.clone(),
        issuer: some(&v.issuer),
        namespace: some(&v.namespace),
        auth,
        ca_pem: some(&v.ca_pem),
    })
}

/// The roots Secret's data for the Vault backend: only the hub's credential.
pub fn vault_material(auth: &VaultAuth) -> BTreeMap<String, Vec<u8>> {
    let bytes = |s: &SecretString| s.expose_secret().as_bytes().to_vec();
    match auth {
        VaultAuth::Token { token } => [(VAULT_TOKEN_KEY.to_owned(), bytes(token))].into(),
        VaultAuth::AppRole {
            role_id, secret_id, ..
        } => [
            (VAULT_ROLE_ID_KEY.to_owned(), role_id.as_bytes().to_vec()),
            (VAULT_SECRET_ID_KEY.to_owned(), bytes(secret_id)),
        ]
        .into(),
        VaultAuth::Kubernetes { .. } => BTreeMap::new(),
    }
}

/// The Federation's record of Vault settings (never a secret: those stay in the roots Secret).
pub fn vault_backend_spec(c: &VaultConfig) -> VaultBackend {
    let (auth, auth_mount, role, jwt_path) = match &c.auth {
        VaultAuth::Token { .. } => (
            VaultAuthMethod::Token,
            String::new(),
            String::new(),
            String::new(),
        ),
        VaultAuth::AppRole { mount, .. } => (
            VaultAuthMethod::AppRole,
            mount.clone(),
            String::new(),
            String::new(),
        ),
        VaultAuth::Kubernetes {
            mount,
            role,
            jwt_file,
        } => (
            VaultAuthMethod::Kubernetes,
            mount.clone(),
            role.clone(),
            jwt_file.to_string_lossy().into_owned(),
        ),
    };
    VaultBackend {
        address: c.address.clone(),
        mount: c.mount.clone(),
        issuer: c.issuer.clone().unwrap_or_default(),
        namespace: c.namespace.clone().unwrap_or_default(),
        auth,
        auth_mount,
        role,
        jwt_path,
        ca_pem: c.ca_pem.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(auth: VaultAuth) -> VaultConfig {
        VaultConfig {
            address: "https://vault:8200".into(),
            mount: "pki".into(),
            issuer: None,
            namespace: Some("team".into()),
            auth,
            ca_pem: None,
        }
    }

    #[test]
    fn settings_round_trip_through_the_federation_and_the_secret() {
        for auth in [
            VaultAuth::Token {
                token: "s.tok".to_owned().into(),
            },
            VaultAuth::AppRole {
                mount: "approle".into(),
                role_id: "role".into(),
                secret_id: "s3cret".to_owned().into(),
            },
            VaultAuth::Kubernetes {
                mount: "k8s".into(),
                role: "federator".into(),
                jwt_file: "/jwt".into(),
            },
        ] {
            let c = config(auth);
            let spec = vault_backend_spec(&c);
            let spec_text = serde_json::to_string(&spec).unwrap();
            assert!(!spec_text.contains("s.tok") && !spec_text.contains("s3cret"));
            let back = vault_config(&spec, &vault_material(&c.auth)).unwrap();
            assert_eq!(format!("{back:?}"), format!("{c:?}"));
            assert!(!format!("{back:?}").contains("s3cret"), "Debug redacts");
            assert!(!format!("{back:?}").contains("s.tok"), "Debug redacts");
            assert_eq!(
                back.sign_path_of(back.issuer.as_deref()),
                "pki/issuer/default/sign-intermediate"
            );
        }
    }

    #[test]
    fn a_missing_credential_is_named() {
        let c = config(VaultAuth::AppRole {
            mount: String::new(),
            role_id: "role".into(),
            secret_id: "x".to_owned().into(),
        });
        let mut spec = vault_backend_spec(&c);
        let mut data = vault_material(&c.auth);
        data.remove(VAULT_SECRET_ID_KEY);
        let err = vault_config(&spec, &data).unwrap_err().to_string();
        assert!(
            err.contains("vault-secret-id") && err.contains("approle"),
            "{err}"
        );
        // An empty auth mount means the method's default; an empty JWT path the pod's token.
        spec.auth = VaultAuthMethod::Kubernetes;
        let k = vault_config(&spec, &BTreeMap::new()).unwrap();
        match k.auth {
            VaultAuth::Kubernetes {
                mount, jwt_file, ..
            } => {
                assert_eq!(mount, "kubernetes");
                assert_eq!(jwt_file, PathBuf::from(DEFAULT_SERVICE_ACCOUNT_TOKEN));
            }
            other => panic!("{other:?}"),
        }
    }
}
