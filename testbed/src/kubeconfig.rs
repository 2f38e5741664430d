//! Kubeconfig files with embedded credentials (one cluster, one user, one context).

use std::path::Path;

use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

use crate::Result;

/// How the kubeconfig's user authenticates. `Debug` never shows a credential.
#[derive(Clone)]
pub enum Credentials {
    /// A bearer token.
    Token(String),
    /// A client certificate and its key (PEM).
    ClientCert {
        /// Certificate PEM.
        cert_pem: String,
        /// Private key PEM.
        key_pem: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(..)"),
            Credentials::ClientCert { .. } => f.write_str("ClientCert(..)"),
        }
    }
}

/// Renders a kubeconfig whose cluster and context are both named `name`.
pub fn render(
    name: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    creds: &Credentials,
) -> Result<String> {
    let auth_info = match creds {
        Credentials::Token(t) => AuthInfo {
            token: Some(t.clone().into()),
            ..AuthInfo::default()
        },
        Credentials::ClientCert { cert_pem, key_pem } => AuthInfo {
            client_certificate_data: Some(b64(cert_pem.as_bytes())),
            client_key_data: Some(b64(key_pem.as_bytes()).into()),
            ..AuthInfo::default()
        },
    };
    let kc = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: name.to_owned(),
            cluster: Some(Cluster {
                server: Some(server.to_owned()),
                certificate_authority_data: Some(b64(ca_pem.as_bytes())),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.to_owned(),
            auth_info: Some(auth_info),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: name.to_owned(),
            context: Some(Context {
                cluster: name.to_owned(),
                user: Some(user.to_owned()),
                namespace: Some("default".to_owned()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(name.to_owned()),
        ..Kubeconfig::default()
    };
    Ok(serde_yaml::to_string(&kc)?)
}

/// Writes a kubeconfig (mode 0600: it holds credentials).
pub fn write(
    path: &Path,
    name: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    creds: &Credentials,
) -> Result<()> {
    let yaml = render(name, server, ca_pem, user, creds)?;
    crate::pki::write_private(path, &yaml)
}

/// Standard base64 with padding (kubeconfig `*-data` fields).
fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(i.as_bytes()), o);
        }
    }

    #[test]
    fn kube_parses_it() {
        let yaml = render(
            "c1",
            "https://127.0.0.1:1234",
            "CA",
            "admin",
            &Credentials::Token("t".into()),
        )
        .unwrap();
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("c1"));
        assert_eq!(
            kc.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://127.0.0.1:1234")
        );
    }
}
