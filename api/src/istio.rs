//! What federator reads from Istio's own objects, shared by the agent and `federator doctor`.

use federator_core::istiod::{Container, IstiodFacts, VERSION_LABEL};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

/// What the istiod Deployment says about the istiod it runs: its version (image tag, else
/// the `app.kubernetes.io/version` label), `ISTIO_MULTIROOT_MESH` and workload certificate TTL.
pub fn istiod_facts(d: &Deployment) -> IstiodFacts {
    let containers = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    let envs: Vec<Vec<(&str, Option<&str>)>> = containers
        .iter()
        .map(|c| {
            c.env
                .iter()
                .flatten()
                .map(|e| (e.name.as_str(), e.value.as_deref()))
                .collect()
        })
        .collect();
    let views: Vec<Container<'_>> = containers
        .iter()
        .zip(&envs)
        .map(|(c, env)| Container {
            name: &c.name,
            image: c.image.as_deref(),
            env,
        })
        .collect();
    IstiodFacts::read(&views, d.labels().get(VERSION_LABEL).map(String::as_str))
}

/// `meshConfig.defaultConfig.proxyMetadata` key that makes sidecars take the mesh config's
/// `caCertificates` over XDS (PCDS); without it a sidecar learns new roots only at its next
/// workload certificate rotation.
pub const PROXY_CONFIG_XDS_AGENT: &str = "PROXY_CONFIG_XDS_AGENT";

/// What `federator doctor` reads from the mesh config (the `mesh` key of ConfigMap
/// `istio-system/istio`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshSettings {
    /// `trustDomain` (`cluster.local` when unset).
    pub trust_domain: String,
    /// `defaultConfig.proxyMetadata.PROXY_CONFIG_XDS_AGENT` is `"true"`.
    pub proxy_config_xds_agent: bool,
}

/// Reads [`MeshSettings`] from a mesh config (YAML; empty: every default). An error says
/// what is malformed.
pub fn mesh_settings(yaml: &str) -> Result<MeshSettings, String> {
    use serde_yaml::Value;
    let mesh: Value = if yaml.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml::from_str(yaml).map_err(|e| format!("the mesh config is not YAML: {e}"))?
    };
    let trust_domain = match mesh.get("trustDomain") {
        None | Some(Value::Null) => federator_core::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("the mesh config's trustDomain is not a string".into()),
    };
    let xds = mesh
        .get("defaultConfig")
        .and_then(|d| d.get("proxyMetadata"))
        .and_then(|m| m.get(PROXY_CONFIG_XDS_AGENT));
    let proxy_config_xds_agent = match xds {
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(Value::Bool(b)) => *b,
        _ => false,
    };
    Ok(MeshSettings {
        trust_domain,
        proxy_config_xds_agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_settings_default_and_read() {
        let d = mesh_settings("").unwrap();
        assert_eq!(d.trust_domain, "cluster.local");
        assert!(!d.proxy_config_xds_agent);
        let s = mesh_settings(
            "trustDomain: east.local\ndefaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: \"true\"\n",
        )
        .unwrap();
        assert_eq!(s.trust_domain, "east.local");
        assert!(s.proxy_config_xds_agent);
        assert!(
            !mesh_settings(
                "defaultConfig:\n  proxyMetadata:\n    PROXY_CONFIG_XDS_AGENT: \"false\"\n"
            )
            .unwrap()
            .proxy_config_xds_agent
        );
        assert!(mesh_settings("trustDomain: [a]").is_err());
        assert!(mesh_settings(": : :").is_err());
    }
}
