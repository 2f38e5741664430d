//! Waiting for the agent Deployment `join` installed to become available, and saying why when
//! it cannot (an image that cannot be pulled, a crashing container, no node to run on, no
//! controller acting on Deployments) instead of waiting silently.
//!
//! [`diagnose`] is the pure part: from the Deployment and its Pods, whether the rollout is
//! done, still progressing, or stuck for a reason the user must fix.

use std::time::{Duration, Instant};

use federator_api::{agent, names};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::{Error, Result};

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// An up-to-date replica is available.
    Available,
    /// Not yet; what is happening, for the message at the timeout.
    Progressing(String),
    /// It cannot succeed without the user: what is wrong and what to do.
    Stuck(String),
}

/// Waiting reasons of a container that mean its image cannot be had. A first `ErrImagePull`
/// may be a registry's hiccup: the kubelet retries, and reports `ImagePullBackOff` when that
/// failed too, which is when join gives up.
const IMAGE_REASONS: [&str; 3] = ["ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"];

fn image_hint(image: &str) -> String {
    format!(
        "load the image {image} into the cluster's nodes (build it with scripts/images, then e.g. \
         `kind load image-archive target/images/cluster-agent-{v}.oci.tar` or \
         `ctr -n k8s.io images import` on each node), or push it to a registry the nodes can \
         pull from and run join again with --agent-image REGISTRY/cluster-agent:{v}",
        v = env!("CARGO_PKG_VERSION")
    )
}

/// Where the agent Deployment `d` with Pods `pods` stands (see [`Rollout`]).
pub fn diagnose(d: &Deployment, pods: &[Pod]) -> Rollout {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    let image = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    // As `kubectl rollout status`: every desired replica updated, no old one left, and every
    // updated one available.
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    if observed
        && updated >= desired
        && status.replicas.unwrap_or(0) <= updated
        && status.available_replicas.unwrap_or(0) >= updated
    {
        return Rollout::Available;
    }
    let wanted = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .map(|c| (c.image.clone(), c.args.clone()));
    // Only Pods of the current template: an old Pod on its way out says nothing about it.
    let current = pods.iter().filter(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| (c.image.clone(), c.args.clone()))
                == wanted
    });
    for pod in current {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let st = pod.status.clone().unwrap_or_default();
        for c in st.container_statuses.iter().flatten() {
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
            let reason = waiting.and_then(|w| w.reason.clone()).unwrap_or_default();
            let message = waiting.and_then(|w| w.message.clone()).unwrap_or_default();
            if IMAGE_REASONS.contains(&reason.as_str()) {
                return Rollout::Stuck(format!(
                    "the agent Pod {name} cannot get its image {image} ({reason}: {message}): {}",
                    image_hint(&image)
                ));
            }
            if reason == "CrashLoopBackOff" || c.restart_count >= 3 {
                let last = c
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| {
                        format!(
                            "exit code {}{}",
                            t.exit_code,
                            t.message
                                .as_deref()
                                .map(|m| format!(": {}", m.trim()))
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "no exit status yet".to_owned());
                return Rollout::Stuck(format!(
                    "the agent container in Pod {name} keeps exiting ({last}); see `kubectl -n {} logs {name}`",
                    names::NAMESPACE
                ));
            }
            if reason == "CreateContainerConfigError" || reason == "CreateContainerError" {
                return Rollout::Stuck(format!(
                    "the agent container in Pod {name} cannot be created ({reason}: {message})"
                ));
            }
        }
        let unschedulable = st.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        if let Some(c) = unschedulable {
            return Rollout::Stuck(format!(
                "the agent Pod {name} cannot be scheduled: {}",
                c.message.clone().unwrap_or_default()
            ));
        }
    }
    if !observed {
        return Rollout::Progressing(format!(
            "no controller has acted on Deployment {}/{} yet (status.observedGeneration {} < {generation}): does the cluster run a kube-controller-manager?",
            names::NAMESPACE,
            names::AGENT_DEPLOYMENT,
            status.observed_generation.unwrap_or(0)
        ));
    }
    if pods.is_empty() {
        return Rollout::Progressing("no agent Pod exists yet".to_owned());
    }
    let phases: Vec<String> = pods
        .iter()
        .map(|p| {
            let st = p.status.clone().unwrap_or_default();
            let ready = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            format!(
                "{} {}{}",
                p.metadata.name.clone().unwrap_or_default(),
                st.phase.unwrap_or_else(|| "Pending".to_owned()),
                if ready { ", ready" } else { ", not ready (the agent answers /readyz once it reached its API server and reconciled)" }
            )
        })
        .collect();
    Rollout::Progressing(format!("agent Pods: {}", phases.join("; ")))
}

/// Waits up to `timeout` until the agent Deployment is available; fails early with the reason
/// when it is stuck, and at the timeout with what was seen last.
pub async fn wait_available(member: &Client, cluster: &str, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(member.clone(), names::NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(member.clone(), names::NAMESPACE);
    let selector = agent::pod_labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    loop {
        let d = deployments
            .get(names::AGENT_DEPLOYMENT)
            .await
            .map_err(|e| Error::kube("read the agent Deployment", e))?;
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| Error::kube("list the agent Pods", e))?;
        match diagnose(&d, &list.items) {
            Rollout::Available => return Ok(started.elapsed()),
            Rollout::Stuck(why) => {
                return Err(Error::AgentUnavailable(format!(
                    "cluster {cluster}: the agent Deployment {}/{} cannot become available: {why}. The hub was not changed by this join; run it again once this is fixed (or use --agent-mode external)",
                    names::NAMESPACE,
                    names::AGENT_DEPLOYMENT
                )));
            }
            Rollout::Progressing(what) => {
                if started.elapsed() >= timeout {
                    return Err(Error::AgentUnavailable(format!(
                        "cluster {cluster}: the agent Deployment {}/{} is not available after {}s: {what}. The hub was not changed by this join; run it again (with a longer --wait), or use --agent-mode external",
                        names::NAMESPACE,
                        names::AGENT_DEPLOYMENT,
                        timeout.as_secs()
                    )));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodStatus,
    };

    fn deploy(generation: i64, observed: i64, available: i32) -> Deployment {
        let mut d = agent::deployment("localhost/federator/cluster-agent:0.1.0", "east");
        d.metadata.generation = Some(generation);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(1),
            updated_replicas: Some(1),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        });
        d
    }

    fn pod(status: PodStatus) -> Pod {
        let d = deploy(1, 1, 0);
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("federator-agent-abc".into()),
                ..Default::default()
            },
            spec: d.spec.unwrap().template.spec,
            status: Some(status),
        }
    }

    fn waiting(reason: &str, message: &str, restarts: i32) -> PodStatus {
        PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "cluster-agent".into(),
                restart_count: restarts,
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: Some(message.into()),
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }
    }

    #[test]
    fn available_when_an_updated_replica_is_available() {
        assert_eq!(diagnose(&deploy(2, 2, 1), &[]), Rollout::Available);
        // A rollout in progress: the old replica is available, the new one is not yet.
        let mut d = deploy(2, 2, 1);
        d.status.as_mut().unwrap().replicas = Some(2);
        assert!(matches!(diagnose(&d, &[]), Rollout::Progressing(_)));
        assert!(
            matches!(diagnose(&deploy(2, 1, 1), &[]), Rollout::Progressing(m) if m.contains("kube-controller-manager"))
        );
    }

    #[test]
    fn an_image_that_cannot_be_pulled_says_which_and_what_to_do() {
        let p = pod(waiting("ImagePullBackOff", "Back-off pulling image", 0));
        let Rollout::Stuck(m) = diagnose(&deploy(1, 1, 0), &[p]) else {
            panic!("not stuck")
        };
        assert!(m.contains("localhost/federator/cluster-agent:0.1.0"), "{m}");
        assert!(m.contains("ImagePullBackOff"), "{m}");
        assert!(m.contains("--agent-image"), "{m}");
        assert!(m.contains("kind load image-archive"), "{m}");
    }

    #[test]
    fn a_first_failed_pull_is_retried() {
        let p = pod(waiting("ErrImagePull", "dial tcp: i/o timeout", 0));
        assert!(matches!(
            diagnose(&deploy(1, 1, 0), &[p]),
            Rollout::Progressing(_)
        ));
    }

    #[test]
    fn a_crashing_agent_and_an_unschedulable_pod_are_stuck() {
        let mut st = waiting("CrashLoopBackOff", "back-off 10s", 2);
        st.container_statuses.as_mut().unwrap()[0].last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                message: Some("not running in a cluster".into()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        let Rollout::Stuck(m) = diagnose(&deploy(1, 1, 0), &[pod(st)]) else {
            panic!("not stuck")
        };
        assert!(m.contains("exit code 1: not running in a cluster"), "{m}");

        let st = PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/1 nodes are available: 1 Insufficient memory.".into()),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        };
        let Rollout::Stuck(m) = diagnose(&deploy(1, 1, 0), &[pod(st)]) else {
            panic!("not stuck")
        };
        assert!(m.contains("Insufficient memory"), "{m}");
    }

    #[test]
    fn an_old_pod_says_nothing_about_the_new_template() {
        let mut old = pod(waiting("ImagePullBackOff", "Back-off pulling image", 0));
        old.spec.as_mut().unwrap().containers[0].image = Some("localhost/nope:1".into());
        assert!(matches!(
            diagnose(&deploy(2, 2, 0), &[old]),
            Rollout::Progressing(_)
        ));
    }

    #[test]
    fn a_starting_pod_is_progressing() {
        let p = pod(waiting("ContainerCreating", "", 0));
        assert!(
            matches!(diagnose(&deploy(1, 1, 0), &[p]), Rollout::Progressing(m) if m.contains("not ready"))
        );
    }
}
