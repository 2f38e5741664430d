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
