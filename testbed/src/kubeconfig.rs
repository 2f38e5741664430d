//! Kubeconfig files with embedded credentials (one cluster, one user, one context).

use std::path::Path;

use serde::Serialize;

use crate::Result;

/// How the kubeconfig's user authenticates.
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
    let user_entry = match creds {
        Credentials::Token(t) => UserEntry {
            token: Some(t.clone()),
            client_certificate_data: None,
            client_key_data: None,
        },
        Credentials::ClientCert { cert_pem, key_pem } => UserEntry {
            token: None,
            client_certificate_data: Some(b64(cert_pem.as_bytes())),
            client_key_data: Some(b64(key_pem.as_bytes())),
        },
    };
    let kc = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: name.to_owned(),
            cluster: Some(ClusterEntry {
                server: server.to_owned(),
                certificate_authority_data: b64(ca_pem.as_bytes()),
            }),
            user: None,
            context: None,
        }],
        users: vec![Named {
            name: user.to_owned(),
            cluster: None,
            user: Some(user_entry),
            context: None,
        }],
        contexts: vec![Named {
            name: name.to_owned(),
            cluster: None,
            user: None,
            context: Some(ContextEntry {
                cluster: name.to_owned(),
                user: user.to_owned(),
                namespace: "default".to_owned(),
            }),
        }],
        current_context: name.to_owned(),
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

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named>,
    users: Vec<Named>,
    contexts: Vec<Named>,
    current_context: String,
}

#[derive(Serialize)]
struct Named {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<ContextEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
}

#[derive(Serialize)]
struct ContextEntry {
    cluster: String,
    user: String,
    namespace: String,
}

/// Standard base64 with padding (kubeconfig `*-data` fields).
fn b64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
