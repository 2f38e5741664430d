//! The agent's Deployment, as `federator join` installs it in a member (its permissions are in
//! [`crate::rbac`]).
//!
//! One replica of [`crate::names::AGENT_IMAGE`] (or the image given), running as the agent's
//! own ServiceAccount with the in-cluster configuration, hardened the way the Pod Security
//! Standards' `restricted` profile asks: non-root (65532, the image's user), read-only root
//! file system, no privilege escalation, every capability dropped, `RuntimeDefault` seccomp.
//! Requests and limits are sized for one small controller. The agent serves `/metrics`,
//! `/healthz` (liveness) and `/readyz` (readiness: it reached its API server and reconciled
//! once) on [`METRICS_PORT`] (the container port named `metrics`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::names;

/// The container's name.
pub const CONTAINER: &str = "cluster-agent";
/// The port of `/metrics`, `/healthz` and `/readyz` (named `metrics`).
pub const METRICS_PORT: i32 = 9091;
/// The name of that container port.
pub const METRICS_PORT_NAME: &str = "metrics";
/// The user (and group) the agent runs as: distroless' `nonroot`, the image's `USER`.
pub const RUN_AS: i64 = 65532;

/// The labels of the agent's Pods (also the Deployment's selector).
pub fn pod_labels() -> BTreeMap<String, String> {
    [
        (
            "app.kubernetes.io/name".to_owned(),
            names::AGENT_DEPLOYMENT.to_owned(),
        ),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "federator".to_owned(),
        ),
    ]
    .into()
}

fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    [
        ("cpu".to_owned(), Quantity(cpu.to_owned())),
        ("memory".to_owned(), Quantity(memory.to_owned())),
    ]
    .into()
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(METRICS_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The agent's Deployment for cluster `cluster` with `image`.
pub fn deployment(image: &str, cluster: &str) -> Deployment {
    let mut labels = pod_labels();
    labels.insert(
        names::MANAGED_BY_LABEL.0.to_owned(),
        names::MANAGED_BY_LABEL.1.to_owned(),
    );
    Deployment {
        metadata: ObjectMeta {
            name: Some(names::AGENT_DEPLOYMENT.to_owned()),
            namespace: Some(names::NAMESPACE.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(pod_labels()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names::AGENT_SERVICE_ACCOUNT.to_owned()),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![Container {
                        name: CONTAINER.to_owned(),
                        image: Some(image.to_owned()),
                        image_pull_policy: Some("IfNotPresent".to_owned()),
                        args: Some(vec![
                            "--cluster-name".to_owned(),
                            cluster.to_owned(),
                            "--metrics-addr".to_owned(),
                            format!("0.0.0.0:{METRICS_PORT}"),
                        ]),
                        ports: Some(vec![ContainerPort {
                            name: Some(METRICS_PORT_NAME.to_owned()),
                            container_port: METRICS_PORT,
                            protocol: Some("TCP".to_owned()),
                            ..ContainerPort::default()
                        }]),
                        liveness_probe: Some(http_probe("/healthz", 10, 3)),
                        readiness_probe: Some(http_probe("/readyz", 2, 1)),
                        resources: Some(ResourceRequirements {
                            requests: Some(quantities("10m", "32Mi")),
                            limits: Some(quantities("500m", "128Mi")),
                            ..ResourceRequirements::default()
                        }),
                        security_context: Some(SecurityContext {
                            run_as_non_root: Some(true),
                            read_only_root_filesystem: Some(true),
                            allow_privilege_escalation: Some(false),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".to_owned()]),
                                ..Capabilities::default()
                            }),
                            ..SecurityContext::default()
                        }),
                        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_is_hardened_and_probed() {
        let d = deployment("registry.example/cluster-agent:1", "east");
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("federator-agent"));
        assert_ne!(pod.host_network, Some(true), "in-cluster networking");
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.example/cluster-agent:1"));
        let args = c.args.as_ref().unwrap();
        assert_eq!(args[..2], ["--cluster-name".to_owned(), "east".to_owned()]);
        assert!(
            args.windows(2)
                .any(|w| w == ["--metrics-addr".to_owned(), "0.0.0.0:9091".to_owned()])
        );
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9091)
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        let res = c.resources.as_ref().unwrap();
        assert!(res.requests.as_ref().unwrap().contains_key("memory"));
        assert!(res.limits.as_ref().unwrap().contains_key("memory"));
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(ready.port, IntOrString::String("metrics".into()));
        let live = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        // The selector matches the template.
        let sel = d
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .clone()
            .unwrap();
        let tpl = d
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert!(sel.iter().all(|(k, v)| tpl.get(k) == Some(v)));
    }

    #[test]
    fn the_default_image_is_the_projects_local_one() {
        assert!(names::AGENT_IMAGE.starts_with("localhost/federator/cluster-agent:"));
        assert!(names::AGENT_IMAGE.ends_with(env!("CARGO_PKG_VERSION")));
    }
}
