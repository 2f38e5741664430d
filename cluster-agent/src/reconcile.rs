//! One reconcile: read the exchange object and the cluster, apply the decisions of
//! [`crate::logic`] in protocol order, write only what differs, report.
//!
//! Every step is idempotent and persists its result before the next step relies on it, so
//! the agent converges from any state, including after being killed between two writes:
//!
//! 1. a fresh key and CSR go into the agent Secret before `status.csr` shows the CSR;
//! 2. an accepted chain is promoted in the agent Secret before `cacerts` is written;
//! 3. `cacerts` is written in one create/update; when istiod must be restarted, the same
//!    write carries the annotation `federator.io/istiod-restart-pending`, which is removed
//!    only after the Deployment was patched (4), so a restart decision survives a crash;
//! 5. the mesh config is merged;
//! 6. the remote secrets are projected from the hub's `federator-peers` Secret (when this
//!    member takes part in discovery, and only the set the hub vouched for in
//!    `spec.peersDigest`);
//! 7. the status is patched when it differs, and events record what was done.

use std::collections::BTreeMap;

use federator_api::events::{Events, Note, reasons as events};
use federator_api::fields;
use federator_api::member::{ClusterTrust, ClusterTrustStatus, RemoteSecretsStatus};
use federator_api::{names, plumbing, remote};
use federator_core::bundle::TrustBundle;
use federator_core::cacerts::CaCerts;
use federator_core::cert::rfc3339;
use federator_core::identity::TrustDomain;
use federator_core::istiod::IstiodFacts;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use crate::logic::istiod::{IstiodEvent, IstiodObservation, Published, RestartDecision};
use crate::logic::material::AgentMaterial;
use crate::logic::signed::SignedStep;
use crate::logic::status::{self, InstallFacts, MeshFacts, Report};
use crate::logic::{cacerts, csr, istiod, mesh, signed};
use crate::{Error, Options, Result};

/// Annotation on `cacerts` recording a restart of istiod that was decided but not yet done.
pub const RESTART_PENDING_ANNOTATION: &str = "federator.io/istiod-restart-pending";

/// What one reconcile wrote.
#[derive(Debug, Default)]
pub struct Summary {
    /// One line per write, e.g. `Secret istio-system/cacerts`.
    pub writes: Vec<String>,
    /// Events about what was done, for the `ClusterTrust`.
    pub notes: Vec<Note>,
    /// The `ClusterTrust` status the reconcile wrote or found current.
    pub status: Option<federator_api::member::ClusterTrustStatus>,
}

impl Summary {
    /// Records a write and the event that tells of it.
    fn wrote(&mut self, write: impl Into<String>, note: Note) {
        self.writes.push(write.into());
        self.notes.push(note);
    }
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(names::AGENT_FIELD_MANAGER.to_owned()),
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(names::AGENT_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

fn secret_data(secret: Option<&Secret>) -> Option<BTreeMap<String, Vec<u8>>> {
    secret.map(plumbing::secret_data)
}

fn missing_namespace(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

/// Creates or updates (with its resourceVersion) a Secret so that its data is exactly `data`
/// and the annotation `annotation` has the given value (`None`: absent).
async fn write_secret(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    current: Option<Secret>,
    data: BTreeMap<String, Vec<u8>>,
    annotation: Option<(&str, Option<&str>)>,
) -> Result<Secret> {
    match current {
        Some(mut s) => {
            s.metadata.managed_fields = None;
            s.data = Some(plumbing::byte_strings(data));
            s.string_data = None;
            match annotation {
                Some((k, Some(v))) => {
                    s.metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k.to_owned(), v.to_owned());
                }
                Some((k, None)) => {
                    if let Some(a) = s.metadata.annotations.as_mut() {
                        a.remove(k);
                    }
                }
                None => {}
            }
            api.replace(name, &post_params(), &s)
                .await
                .map_err(Error::kube(format!("update Secret {namespace}/{name}")))
        }
        None => {
            let mut metadata = plumbing::metadata(name, namespace);
            metadata.annotations =
                annotation.and_then(|(k, v)| v.map(|v| [(k.to_owned(), v.to_owned())].into()));
            let s = Secret {
                metadata,
                type_: Some("Opaque".to_owned()),
                data: Some(plumbing::byte_strings(data)),
                ..Secret::default()
            };
            api.create(&post_params(), &s).await.map_err(|e| {
                if missing_namespace(&e) {
                    Error::NamespaceMissing(namespace.to_owned())
                } else {
                    Error::kube(format!("create Secret {namespace}/{name}"))(e)
                }
            })
        }
    }
}

/// Writes the agent Secret so that it holds exactly `material`.
async fn write_agent_secret(
    api: &Api<Secret>,
    current: Option<Secret>,
    material: &AgentMaterial,
) -> Result<Secret> {
    let name = names::AGENT_KEY_SECRET;
    write_secret(
        api,
        names::NAMESPACE,
        name,
        current,
        material.to_data(),
        None,
    )
    .await
}

/// Reconciles the cluster once and publishes the events of what it did. A failure to reach
/// the cluster's own state returns early; a failure on the Istio side is reported in the
/// status first and then returned, so the controller retries with backoff.
pub async fn reconcile_once(client: &Client, opts: &Options, events: &Events) -> Result<Summary> {
    let trusts: Api<ClusterTrust> = Api::namespaced(client.clone(), names::NAMESPACE);
    let object = format!("ClusterTrust {}/{}", names::NAMESPACE, names::CLUSTER_TRUST);
    let Some(trust) = trusts
        .get_opt(names::CLUSTER_TRUST)
        .await
        .map_err(Error::kube(format!("read {object}")))?
    else {
        debug!("no {object}: nothing to do until `federator join` creates it");
        return Ok(Summary::default());
    };
    let mut summary = Summary::default();
    let result = reconcile_trust(client, opts, &trusts, &trust, &mut summary).await;
    let cacerts = format!(
        "Secret {}/{}",
        names::ISTIO_NAMESPACE,
        names::CACERTS_SECRET
    );
    let cacerts_writes = summary.writes.iter().filter(|w| **w == cacerts).count();
    opts.health.metrics().observe(
        summary.status.as_ref(),
        u64::try_from(cacerts_writes).unwrap_or(u64::MAX),
    );
    let reference = trust.object_ref(&());
    let reported = trust
        .status
        .as_ref()
        .map(|s| s.problems.clone())
        .unwrap_or_default();
    for note in summary.notes.iter().filter(|n| n.is_news(&reported)) {
        events.publish(&reference, note).await;
    }
    result.map(|()| summary)
}

async fn reconcile_trust(
    client: &Client,
    opts: &Options,
    trusts: &Api<ClusterTrust>,
    trust: &ClusterTrust,
    summary: &mut Summary,
) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let spec = &trust.spec;
    debug!(
        resource_version = trust
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default(),
        csr_generation = spec.csr_generation,
        bundle_generation = spec.bundle_generation,
        "reconciling"
    );
    let generation = trust.metadata.generation;
    let mut problems: Vec<String> = Vec::new();

    let identity = csr::identity(spec, opts.cluster_name.as_deref())
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let bundle = cacerts::bundle_from_spec(spec)
        .map_err(|e| problems.push(e.to_string()))
        .ok();

    // 1. Key and CSR.
    let own: Api<Secret> = Api::namespaced(client.clone(), names::NAMESPACE);
    let agent_secret_name = format!("{}/{}", names::NAMESPACE, names::AGENT_KEY_SECRET);
    let mut agent_secret = own
        .get_opt(names::AGENT_KEY_SECRET)
        .await
        .map_err(Error::kube(format!("read Secret {agent_secret_name}")))?;
    let (mut material, p) =
        AgentMaterial::from_data(&secret_data(agent_secret.as_ref()).unwrap_or_default());
    problems.extend(p);
    let mut refused = None;
    if let Some(id) = &identity {
        if let Some(reason) = csr::fresh_csr_reason(spec, id, material.pending.as_ref()) {
            match csr::key_algorithm(spec) {
                Ok(alg) => {
                    // Off the runtime's thread: an RSA key takes seconds, and the agent's
                    // watches and probes share that thread.
                    let pending = {
                        let (id, generation) = (id.clone(), spec.csr_generation);
                        tokio::task::spawn_blocking(move || {
                            csr::fresh_pending(&id, alg, generation)
                        })
                        .await
                        .map_err(Error::KeyTask)??
                    };
                    let next = AgentMaterial {
                        pending: Some(pending),
                        installed: material.installed.clone(),
                    };
                    match write_agent_secret(&own, agent_secret.take(), &next).await {
                        Ok(s) => agent_secret = Some(s),
                        Err(e) => return report_early(trusts, trust, e, now).await,
                    }
                    federator_api::failpoint!("agent.after-pending-key");
                    material = next;
                    let digest = material
                        .pending
                        .as_ref()
                        .map(|p| csr::digest(p).unwrap_or_default())
                        .unwrap_or_default();
                    info!(
                        generation = spec.csr_generation,
                        algorithm = %alg,
                        csr_digest = %digest,
                        %reason,
                        "made a fresh key and CSR (key kept in the agent Secret)"
                    );
                    let message = format!(
                        "made a fresh {alg} key and CSR generation {} (the key stays in this cluster): {reason}",
                        spec.csr_generation
                    );
                    summary.wrote(
                        "agent Secret: fresh key and CSR",
                        Note::normal(events::CSR_CREATED, "CreateCsr", message),
                    );
                }
                Err(e) => problems.push(e.to_string()),
            }
        }

        // 2. The hub's answer.
        let ztunnel = ambient_mode(client, spec, &material, &mut problems).await;
        if let Some(b) = &bundle {
            match signed::signed_step(spec, id, b, &material, ztunnel != Some(false), now) {
                SignedStep::Nothing => {}
                SignedStep::Install(installed) => {
                    let next = AgentMaterial {
                        pending: material.pending.clone(),
                        installed: Some(installed),
                    };
                    if let Err(e) = write_agent_secret(&own, agent_secret.take(), &next).await {
                        return report_early(trusts, trust, e, now).await;
                    }
                    federator_api::failpoint!("agent.after-promote");
                    material = next;
                    let generation = material.installed.as_ref().map(|i| i.generation);
                    info!(generation, "accepted the hub's signed chain");
                    summary.wrote(
                        "agent Secret: promoted the signed chain",
                        Note::normal(
                            events::CHAIN_ACCEPTED,
                            "ValidateChain",
                            format!(
                                "accepted the hub's signed chain for CSR generation {}",
                                generation.unwrap_or_default()
                            ),
                        ),
                    );
                }
                SignedStep::Refuse(why) => {
                    warn!(reason = %why, "refused the hub's signed chain; keeping the installed cluster CA");
                    let why = why.to_string();
                    summary.notes.push(Note::warning(
                        events::CHAIN_REJECTED,
                        "ValidateChain",
                        why.clone(),
                    ));
                    problems.push(why.clone());
                    refused = Some(why);
                }
            }
        }
        if ztunnel == Some(true)
            && material
                .installed
                .as_ref()
                .is_some_and(|i| signed::constrained(&i.chain_pem))
        {
            problems.push(
                crate::logic::problem::Problem::InstalledConstrainedWithZtunnel(
                    id.trust_domain.clone(),
                )
                .to_string(),
            );
        }
    }
    let csr_status = match material.pending.as_ref().map(csr::csr_status) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            problems.push(e.to_string());
            None
        }
        None => None,
    };

    // 3 + 4. cacerts and istiod.
    let mut material_error = None;
    let desired = match (&material.installed, &bundle) {
        (Some(inst), Some(b)) => match cacerts::desired_cacerts(inst, b, now) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(e.to_string());
                material_error = Some(e.to_string());
                None
            }
        },
        (Some(_), None) => {
            material_error = Some("spec.bundle cannot be used (see problems)".to_owned());
            None
        }
        (None, _) => None,
    };
    let mut failure: Option<Error> = None;
    let istio = match sync_cacerts(client, desired.as_ref(), now, summary).await {
        Ok(o) => Some(o),
        Err(e) => {
            problems.push(e.to_string());
            failure = Some(e);
            None
        }
    };

    // 5. Mesh config: the bundle and the foreign SPIFFE trust domains' roots.
    let mesh_bundle = match cacerts::mesh_bundle_from_spec(spec) {
        Ok(b) => Some(b),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let mesh_facts = match (&identity, bundle.as_ref().and(mesh_bundle.as_ref())) {
        (Some(id), Some(b)) => match sync_mesh(client, b, &id.trust_domain, summary).await {
            Ok(MeshFacts::Failed(msg)) => {
                problems.push(msg.clone());
                MeshFacts::Failed(msg)
            }
            Ok(f) => f,
            Err(e) => {
                let msg = e.to_string();
                problems.push(msg.clone());
                failure.get_or_insert(e);
                MeshFacts::Failed(msg)
            }
        },
        _ => MeshFacts::Skipped,
    };

    // 6. Remote secrets.
    let remote_secrets = if spec.peers_digest.is_empty() {
        None
    } else {
        match sync_remote_secrets(client, trust, summary).await {
            Ok((status, shadowed)) => {
                problems.extend(shadowed);
                Some(status)
            }
            Err(e) => {
                problems.push(e.to_string());
                let previous = trust.status.as_ref().and_then(|s| s.remote_secrets.clone());
                failure.get_or_insert(e);
                previous
            }
        }
    };

    // 7. Status.
    let previous = trust.status.as_ref();
    let actual_after = istio.as_ref().and_then(|o| o.after.as_ref());
    let in_sync = match (&desired, actual_after, &material.installed) {
        (Some(d), Some(a), Some(inst)) if !cacerts::differs(Some(a), d) => {
            match cacerts::installed_status(inst, spec.bundle_generation) {
                Ok(i) => Some(i),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            }
        }
        _ => None,
    };
    let write_error = failure.as_ref().map(|e| e.to_string());
    let installed_check = status::installed_check(&InstallFacts {
        in_sync: in_sync.as_ref(),
        write_error: istio.is_none().then_some(write_error.as_deref()).flatten(),
        material_error: material_error.as_deref(),
        refused: refused.as_deref(),
        waiting_for: material.pending.as_ref().map(|p| p.generation),
    });
    let bundle_check = match &istio {
        Some(_) => status::bundle_check(
            actual_after
                .and_then(|a| a.get(federator_core::cacerts::ROOT_CERT))
                .map(Vec::as_slice),
            bundle.as_ref(),
            spec.bundle_generation,
        ),
        None => status::Check::fail(
            "CacertsUnavailable",
            "istio-system/cacerts could not be read or written (see problems)",
        ),
    };
    let multi_root = istio
        .as_ref()
        .and_then(|o| o.deployment.as_ref().map(|f| f.multi_root));
    let (mesh_check, mesh_problem) =
        status::mesh_check(&mesh_facts, &spec.trust_domain, multi_root);
    problems.extend(mesh_problem);
    let istiod_status = istio.as_ref().map(|o| {
        let previous_istiod = previous.and_then(|p| p.istiod.as_ref());
        let mut warnings = Vec::new();
        if let (Some(facts), Some(inst)) = (&o.deployment, &in_sync) {
            let renew_after = spec
                .signed
                .as_ref()
                .filter(|s| s.serial == inst.serial)
                .and_then(|s| s.renew_after.as_ref())
                .map(fields::offset);
            warnings.extend(federator_core::istiod::leaf_outlives_ca_warning(
                facts,
                fields::offset(&inst.not_after),
                renew_after,
            ));
        }
        if let Published::Unreadable(why) = &o.published {
            warnings.push(format!(
                "cannot read {}/{} ({why}): the hub cannot tell whether istiod serves the bundle, so it counts cacerts alone; run `federator join` again to update the agent's Role",
                names::ISTIO_NAMESPACE,
                names::ISTIO_ROOT_CERT_CONFIGMAP
            ));
        }
        let observed = IstiodObservation {
            facts: o.deployment.clone(),
            published_generation: istiod::published_generation(
                &o.published,
                bundle.as_ref().map(TrustBundle::to_pem).as_deref(),
                spec.bundle_generation,
                previous_istiod.and_then(|i| i.published_bundle_generation),
            ),
            warnings,
        };
        istiod::istiod_status(&observed, &o.event, previous_istiod)
    });
    let new_status = status::status(
        previous,
        Report {
            csr: csr_status,
            installed: in_sync,
            istiod: istiod_status,
            installed_check,
            bundle_check,
            mesh_check,
            problems,
            generation,
            remote_secrets,
        },
        &fields::time(now),
    );
    if previous != Some(&new_status) {
        patch_status(trusts, &new_status).await?;
        federator_api::failpoint!("agent.after-status");
        summary.writes.push("ClusterTrust status".into());
    }
    summary.status = Some(new_status);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Step 6: reads the peers the hub handed over (`federator-system/federator-peers`), and, when
/// they are the set the hub recorded in `spec.peersDigest`, makes the remote secrets in
/// `istio-system` match them ([`federator_api::remote::plan`]). Returns the status to report
/// and the problems of remote secrets someone else wrote for members.
async fn sync_remote_secrets(
    client: &Client,
    trust: &ClusterTrust,
    summary: &mut Summary,
) -> Result<(RemoteSecretsStatus, Vec<String>)> {
    let spec = &trust.spec;
    let own: Api<Secret> = Api::namespaced(client.clone(), names::NAMESPACE);
    let peers_name = format!("{}/{}", names::NAMESPACE, names::PEERS_SECRET);
    let peers = match own
        .get_opt(names::PEERS_SECRET)
        .await
        .map_err(Error::kube(format!("read Secret {peers_name}")))?
    {
        Some(s) => plumbing::secret_data(&s),
        None => {
            // Deleted: make it again, empty, so that the hub (which may patch it but not
            // create it) can fill it in again.
            let empty = Secret {
                metadata: plumbing::metadata(names::PEERS_SECRET, names::NAMESPACE),
                type_: Some("Opaque".to_owned()),
                ..Secret::default()
            };
            plumbing::create_or_accept(&own, &post_params(), &empty)
                .await
                .map_err(Error::kube(format!("create Secret {peers_name}")))?;
            summary
                .writes
                .push(format!("Secret {peers_name} (re-created empty)"));
            BTreeMap::new()
        }
    };
    let digest = remote::peers_digest(&peers);
    let previous = trust.status.as_ref().and_then(|s| s.remote_secrets.clone());
    if digest != spec.peers_digest {
        // Not (yet) what the hub vouched for: wait for it, touch nothing.
        debug!(%digest, expected = %spec.peers_digest, "the peers Secret is not the hub's current set yet");
        let mut status = previous.unwrap_or_default();
        status.peers_digest = digest;
        return Ok((status, Vec::new()));
    }
    let istio: Api<Secret> = Api::namespaced(client.clone(), names::ISTIO_NAMESPACE);
    let selector = format!(
        "{}={}",
        remote::MULTI_CLUSTER_LABEL.0,
        remote::MULTI_CLUSTER_LABEL.1
    );
    let mut existing = istio
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(
            "list the remote secrets in istio-system".to_owned(),
        ))?
        .items;
    // A plain Secret squatting on a remote secret's name (not labelled) blocks that name.
    for cluster in peers.keys() {
        let name = remote::secret_name(cluster);
        if !existing
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(name.as_str()))
            && let Some(s) = istio
                .get_opt(&name)
                .await
                .map_err(Error::kube(format!("read Secret istio-system/{name}")))?
        {
            existing.push(s);
        }
    }
    let own_name = spec.cluster_name.as_str();
    let plan = remote::plan(own_name, &peers, &existing);
    let mut wrote = Vec::new();
    for s in &plan.create {
        istio
            .create(&post_params(), s)
            .await
            .map_err(Error::kube("create a remote secret".to_owned()))?;
        federator_api::failpoint!("agent.after-remote-secret");
        wrote.push(format!(
            "created {}",
            s.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    for wanted in &plan.update {
        let name = wanted.metadata.name.clone().unwrap_or_default();
        let Some(mut current) = existing
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
            .cloned()
        else {
            continue;
        };
        current.metadata.managed_fields = None;
        current.data = wanted.data.clone();
        current.string_data = None;
        for (field, want) in [
            (&mut current.metadata.labels, &wanted.metadata.labels),
            (
                &mut current.metadata.annotations,
                &wanted.metadata.annotations,
            ),
        ] {
            field
                .get_or_insert_with(BTreeMap::new)
                .extend(want.clone().unwrap_or_default());
        }
        istio
            .replace(&name, &post_params(), &current)
            .await
            .map_err(Error::kube(format!("update Secret istio-system/{name}")))?;
        wrote.push(format!("updated {name}"));
    }
    for name in &plan.delete {
        match istio.delete(name, &Default::default()).await {
            Ok(_) => {}
            Err(e) if plumbing::is_status(&e, 404) => {}
            Err(e) => return Err(Error::kube(format!("delete Secret istio-system/{name}"))(e)),
        }
        wrote.push(format!("deleted {name}"));
    }
    if !wrote.is_empty() {
        info!(changes = ?wrote, peers = ?plan.peers, "remote secrets written");
        summary.wrote(
            format!("remote secrets: {}", wrote.join(", ")),
            Note::normal(
                events::REMOTE_SECRETS_WRITTEN,
                "RemoteSecrets",
                format!(
                    "remote secrets in istio-system: {}; istiod discovers {} peer(s)",
                    wrote.join(", "),
                    plan.peers.len()
                ),
            ),
        );
    }
    let shadowed = plan
        .foreign
        .iter()
        .filter(|f| !f.shadows.is_empty())
        .map(remote::Foreign::describe)
        .collect();
    Ok((
        RemoteSecretsStatus {
            peers_digest: digest,
            peers: plan.peers.clone(),
            foreign: plan.foreign.iter().map(remote::Foreign::describe).collect(),
        },
        shadowed,
    ))
}

/// Whether the cluster runs ztunnel (ambient mode), read only when it matters: when the hub's
/// answer or the installed cluster CA carries the trust-domain name constraint, which
/// ztunnel's verifier rejects (`Some(false)` without reading otherwise). `None` when the
/// DaemonSet cannot be read; the reason goes to `problems`, and a constrained chain is then
/// not installed (it fails closed).
async fn ambient_mode(
    client: &Client,
    spec: &federator_api::member::ClusterTrustSpec,
    material: &AgentMaterial,
    problems: &mut Vec<String>,
) -> Option<bool> {
    let constrained = spec
        .signed
        .as_ref()
        .is_some_and(|s| signed::constrained(&s.chain_pem))
        || material
            .installed
            .as_ref()
            .is_some_and(|i| signed::constrained(&i.chain_pem));
    if !constrained {
        return Some(false);
    }
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), names::ISTIO_NAMESPACE);
    match daemonsets.get_opt(names::ZTUNNEL_DAEMONSET).await {
        Ok(found) => Some(found.is_some()),
        Err(e) => {
            problems.push(format!(
                "cannot read {} to rule out ambient mode ({e}); a cluster CA with a URI name constraint is not installed until it can",
                crate::logic::problem::ZTUNNEL
            ));
            None
        }
    }
}

/// A failure to write the agent Secret stops the reconcile (nothing after it may rely on a
/// write that did not happen). It is reported as a problem, keeping the rest of the status,
/// unless it is a conflict (another writer: a plain retry settles it), and then returned.
async fn report_early(
    trusts: &Api<ClusterTrust>,
    trust: &ClusterTrust,
    error: Error,
    now: OffsetDateTime,
) -> Result<()> {
    if !error.is_conflict() {
        let previous = trust.status.clone().unwrap_or_default();
        let next = status::with_failure(
            &previous,
            &error.to_string(),
            &fields::time(now),
            trust.metadata.generation,
        );
        if next != previous {
            // Best effort: the original error is what counts.
            if let Err(e) = patch_status(trusts, &next).await {
                warn!(error = %e, "cannot report the failure in the status");
            }
        }
    }
    Err(error)
}

async fn patch_status(api: &Api<ClusterTrust>, status: &ClusterTrustStatus) -> Result<()> {
    plumbing::apply_status(
        api,
        names::CLUSTER_TRUST,
        status,
        names::AGENT_FIELD_MANAGER,
    )
    .await
    .map_err(Error::kube(format!(
        "update the status of ClusterTrust {}/{}",
        names::NAMESPACE,
        names::CLUSTER_TRUST
    )))?;
    Ok(())
}

/// What steps 3 and 4 found and did.
struct CacertsOutcome {
    /// `cacerts` after this reconcile (`None`: it does not exist).
    after: Option<BTreeMap<String, Vec<u8>>>,
    /// The istiod Deployment: `None` absent, else what it runs.
    deployment: Option<IstiodFacts>,
    /// What istiod publishes (`Nothing` without an istiod Deployment).
    published: Published,
    /// What happened to istiod.
    event: IstiodEvent,
}

/// What istiod publishes in `istio-system/istio-ca-root-cert`, to tell whether it took the
/// bundle.
async fn published_roots(client: &Client) -> Published {
    let ns = names::ISTIO_NAMESPACE;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match configmaps.get_opt(names::ISTIO_ROOT_CERT_CONFIGMAP).await {
        Ok(cm) => cm
            .and_then(|c| c.data)
            .and_then(|mut d| d.remove(federator_core::cacerts::ROOT_CERT))
            .map_or(Published::Nothing, |pem| Published::Roots(pem.into_bytes())),
        Err(e) => {
            warn!(error = %e, "cannot read {ns}/{}", names::ISTIO_ROOT_CERT_CONFIGMAP);
            Published::Unreadable(e.to_string())
        }
    }
}

fn restarted_at(d: &Deployment) -> Option<&str> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(names::RESTARTED_AT_ANNOTATION))
        .map(String::as_str)
}

async fn sync_cacerts(
    client: &Client,
    desired: Option<&CaCerts>,
    now: OffsetDateTime,
    summary: &mut Summary,
) -> Result<CacertsOutcome> {
    let ns = names::ISTIO_NAMESPACE;
    let name = names::CACERTS_SECRET;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let current = secrets
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read Secret {ns}/{name}")))?;
    let deployment = deployments
        .get_opt(names::ISTIOD_DEPLOYMENT)
        .await
        .map_err(Error::kube(format!(
            "read Deployment {ns}/{}",
            names::ISTIOD_DEPLOYMENT
        )))?;
    let facts = deployment.as_ref().map(federator_api::istio::istiod_facts);
    let published = match &deployment {
        Some(_) => published_roots(client).await,
        None => Published::Nothing,
    };
    let before = secret_data(current.as_ref());
    let mut marker: Option<String> = current
        .as_ref()
        .and_then(|s| s.annotations().get(RESTART_PENDING_ANNOTATION).cloned());
    let mut after = before.clone();
    let mut decision: Option<RestartDecision> = None;

    if let Some(d) = desired
        && cacerts::differs(before.as_ref(), d)
    {
        let dec = facts
            .as_ref()
            .map(|f| istiod::restart_decision(before.as_ref(), &d.root_cert, f));
        if dec.as_ref().is_some_and(|x| x.restart) {
            marker = Some(rfc3339(now));
        }
        write_secret(
            &secrets,
            ns,
            name,
            current,
            d.files(),
            Some((RESTART_PENDING_ANNOTATION, marker.as_deref())),
        )
        .await?;
        federator_api::failpoint!("agent.after-cacerts");
        after = Some(d.files());
        let ca = federator_core::cert::parse_pem_certificates(d.ca_cert.as_bytes(), "ca-cert.pem")
            .ok()
            .and_then(|v| v.first().map(|der| federator_core::cert::fingerprint(der)))
            .unwrap_or_default();
        info!(
            ca_sha256 = %ca,
            restart = dec.as_ref().map(|x| x.restart),
            reason = dec.as_ref().map(|x| x.reason.as_str()).unwrap_or("no istiod Deployment"),
            "wrote {ns}/{name}"
        );
        summary.wrote(
            format!("Secret {ns}/{name}"),
            Note::normal(
                events::CACERTS_WRITTEN,
                "InstallCa",
                format!(
                    "wrote {ns}/{name} (cluster CA sha256 {ca}); {}",
                    dec.as_ref()
                        .map_or("no istiod Deployment", |x| x.reason.as_str())
                ),
            ),
        );
        decision = dec;
    }

    let mut event = match &decision {
        Some(d) if !d.restart => IstiodEvent::HotReload(d.reason.clone()),
        _ => IstiodEvent::Quiet,
    };
    if let Some(m) = marker {
        if let Some(dep) = &deployment {
            if restarted_at(dep) != Some(m.as_str()) {
                let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                    names::RESTARTED_AT_ANNOTATION: m,
                }}}}});
                deployments
                    .patch(
                        names::ISTIOD_DEPLOYMENT,
                        &patch_params(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(Error::kube(format!(
                        "restart Deployment {ns}/{}",
                        names::ISTIOD_DEPLOYMENT
                    )))?;
                info!(restarted_at = %m, "requested a rolling restart of istiod");
                summary.wrote(
                    format!("Deployment {ns}/{}", names::ISTIOD_DEPLOYMENT),
                    Note::normal(
                        events::ISTIOD_RESTART_REQUESTED,
                        "RestartIstiod",
                        format!(
                            "requested a rolling restart of {ns}/{}: {}",
                            names::ISTIOD_DEPLOYMENT,
                            decision.as_ref().filter(|d| d.restart).map_or(
                                "completing a restart decided before the agent was interrupted",
                                |d| d.reason.as_str()
                            )
                        ),
                    ),
                );
            }
            event = IstiodEvent::Restarted(match &decision {
                Some(d) if d.restart => d.reason.clone(),
                _ => "completing a restart decided before the agent was interrupted".to_owned(),
            });
        }
        let clear = json!({"metadata": {"annotations": {RESTART_PENDING_ANNOTATION: null}}});
        secrets
            .patch(name, &patch_params(), &Patch::Merge(&clear))
            .await
            .map_err(Error::kube(format!("update Secret {ns}/{name}")))?;
        summary
            .writes
            .push(format!("Secret {ns}/{name}: restart done"));
    }
    Ok(CacertsOutcome {
        after,
        deployment: facts,
        published,
        event,
    })
}

async fn sync_mesh(
    client: &Client,
    bundle: &TrustBundle,
    own: &TrustDomain,
    summary: &mut Summary,
) -> Result<MeshFacts> {
    let ns = names::ISTIO_NAMESPACE;
    let name = names::ISTIO_CONFIGMAP;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let Some(mut cm) = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read ConfigMap {ns}/{name}")))?
    else {
        return Ok(MeshFacts::Absent);
    };
    let mesh_yaml = cm
        .data
        .as_ref()
        .and_then(|d| d.get(names::MESH_KEY))
        .cloned();
    let annotation = cm
        .annotations()
        .get(names::MANAGED_CA_CERTIFICATES_ANNOTATION)
        .cloned();
    let merged = match mesh::merge(mesh_yaml.as_deref(), annotation.as_deref(), bundle, own) {
        Ok(m) => m,
        Err(e) => return Ok(MeshFacts::Failed(e.to_string())),
    };
    if merged.needs_write() {
        cm.metadata.managed_fields = None;
        if let Some(y) = &merged.new_mesh {
            cm.data
                .get_or_insert_with(BTreeMap::new)
                .insert(names::MESH_KEY.to_owned(), y.clone());
        }
        let anns = cm.metadata.annotations.get_or_insert_with(BTreeMap::new);
        match &merged.annotation {
            Some(a) => {
                anns.insert(
                    names::MANAGED_CA_CERTIFICATES_ANNOTATION.to_owned(),
                    a.clone(),
                );
            }
            None => {
                anns.remove(names::MANAGED_CA_CERTIFICATES_ANNOTATION);
            }
        }
        api.replace(name, &post_params(), &cm)
            .await
            .map_err(Error::kube(format!("update ConfigMap {ns}/{name}")))?;
        federator_api::failpoint!("agent.after-mesh-config");
        info!(
            entries = merged.managed_entries,
            "updated caCertificates in the mesh config"
        );
        summary.wrote(
            format!("ConfigMap {ns}/{name}"),
            Note::normal(
                events::MESH_CONFIG_UPDATED,
                "UpdateMeshConfig",
                format!(
                    "caCertificates in {ns}/{name} lists {} root(s) of other trust domains",
                    merged.managed_entries
                ),
            ),
        );
    }
    Ok(MeshFacts::InSync {
        mesh_trust_domain: merged.mesh_trust_domain,
        managed_entries: merged.managed_entries,
    })
}
