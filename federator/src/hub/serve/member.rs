//! The member controller: one per member, isolated from the others. A kube-runtime
//! `Controller` on the member's `ClusterTrust`, through the member's own API server with the
//! stored least-privilege credential, reconciled also whenever the federation's
//! [`Desired`] state changes.
//!
//! One reconcile ([`reconcile`]), in order:
//!
//! 1. read the `ClusterTrust` fresh (the authenticated contact that proves the credential
//!    still works: a watch opened earlier survives a revocation); a 401 reloads the credential;
//! 2. plan its spec ([`plan::member::plan_member`]): bundle, renewal, re-signing;
//! 3. sign a pending CSR: [`plan::csr`] → the policy → the signer → [`plan::chain`];
//! 4. with remote secrets: renew the member's reader token when due, and hand the member the
//!    other members' reader kubeconfigs (its `federator-peers` Secret) when they changed
//!    ([`plan::peers`]); then write the spec when it differs (a newly signed CA is written
//!    before this step, so that it does not wait on the peers);
//! 5. renew the hub's token for the member when due;
//! 6. mirror the member's state into its `MemberCluster` status on the hub, and publish the
//!    events of what happened.
//!
//! A new per-member output is one more step between 4 and 6, planned in [`plan`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use federator_api::events::{Note, reasons as events};
use federator_api::hub::{MemberCluster, MemberClusterSpec};
use federator_api::member::{ClusterTrust, CsrStatus, SignedCa};
use federator_api::{names, plumbing};
use federator_core::policy::SigningPolicy;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource};
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::{BACKOFF, Shared};
use crate::hub::member_access::{self, StoredCredential};
use crate::hub::plan::{self, federation::Desired, member::StatusInputs};
use crate::hub::trust::signer::Ask;
use crate::{Error, Result};

/// One member's controller state.
pub struct Member {
    shared: Arc<Shared>,
    name: String,
    spec: MemberClusterSpec,
    /// The member's API server, with the hub's credential.
    client: Client,
    /// The credential in use.
    credential: StoredCredential,
    /// The last `ClusterTrust` seen, for the status while the member is unreachable.
    last_seen: Mutex<Option<ClusterTrust>>,
    /// Notified when the member rejects the credential (401) or it was renewed or replaced:
    /// the controller then ends and [`run`] reloads it.
    reload: Arc<Notify>,
    failures: plumbing::Failures,
}

/// Runs one member's controller, reloading the credential whenever it changes and retrying
/// with backoff when it cannot be loaded.
pub async fn run(shared: Arc<Shared>, name: String, spec: MemberClusterSpec) {
    let failures = plumbing::Failures::default();
    loop {
        match connect(&shared, &spec).await {
            Ok((client, credential)) => {
                failures.reset();
                let member = Arc::new(Member {
                    shared: shared.clone(),
                    name: name.clone(),
                    spec: spec.clone(),
                    client,
                    credential,
                    last_seen: Mutex::new(None),
                    reload: Arc::new(Notify::new()),
                    failures: plumbing::Failures::default(),
                });
                controller(member).await;
            }
            Err(e) => {
                warn!(cluster = %name, error = %e, "cannot load the member credential");
                let problem = format!("cannot use the stored credential: {e}");
                if let Err(e) = report_status(&shared, &name, None, false, &[problem], &[]).await {
                    warn!(cluster = %name, error = %e, "cannot report the member's status");
                }
            }
        }
        tokio::time::sleep(BACKOFF.delay(failures.record())).await;
    }
}

async fn connect(shared: &Shared, spec: &MemberClusterSpec) -> Result<(Client, StoredCredential)> {
    let stored = member_access::stored_kubeconfig(&shared.client, &spec.credential_secret)
        .await?
        .ok_or_else(|| {
            Error::Refused(format!(
                "credential Secret {} is missing; run `federator join` again",
                spec.credential_secret
            ))
        })?;
    let client = stored.client(&spec.credential_secret).await?;
    Ok((client, stored))
}

async fn controller(member: Arc<Member>) {
    let api: Api<ClusterTrust> = Api::namespaced(member.client.clone(), names::NAMESPACE);
    let desired_changes =
        futures::stream::unfold(member.shared.desired.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        });
    let reader_changes =
        futures::stream::unfold(member.shared.readers.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        });
    let reload = member.reload.clone();
    let on_result = member.clone();
    let controller = Controller::new(api, plumbing::by_name(names::CLUSTER_TRUST))
        .reconcile_all_on(desired_changes)
        .reconcile_all_on(reader_changes)
        .run(reconcile, error_policy, member.clone())
        .for_each(move |result| {
            let member = on_result.clone();
            async move {
                if let Err(kube::runtime::controller::Error::QueueError(e)) = result {
                    let unauthorized = is_unauthorized(&e);
                    member
                        .unreachable(unauthorized, &format!("cannot watch the cluster: {e}"))
                        .await;
                }
            }
        });
    tokio::select! {
        () = controller => {}
        () = reload.notified() => info!(cluster = %member.name, "credential rejected or replaced; reloading it"),
    }
}

fn is_unauthorized(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => plumbing::is_status(e, 401),
        watcher::Error::WatchError(s) => s.code == 401,
        _ => false,
    }
}

fn error_policy(_ct: Arc<ClusterTrust>, err: &Error, member: Arc<Member>) -> Action {
    let delay = BACKOFF.delay(member.failures.record());
    warn!(cluster = %member.name, error = %err, retry_in = ?delay, "member reconcile failed");
    Action::requeue(delay)
}

impl Member {
    /// Records that the member could not be reached (or rejected the credential); on a 401 the
    /// credential is reloaded.
    async fn unreachable(&self, unauthorized: bool, detail: &str) {
        let (message, notes) = if unauthorized {
            let message = format!(
                "the hub's credential was rejected (401: revoked or expired); run `federator join cluster {}` again to issue a new one",
                self.name
            );
            let note = Note::warning(events::CREDENTIAL_REJECTED, "Connect", message.clone());
            (message, vec![note])
        } else {
            (detail.to_owned(), Vec::new())
        };
        warn!(cluster = %self.name, error = %detail, "member unreachable");
        let last = super::lock(&self.last_seen).clone();
        if let Err(e) = report_status(
            &self.shared,
            &self.name,
            last.as_ref(),
            false,
            &[message],
            &notes,
        )
        .await
        {
            warn!(cluster = %self.name, error = %e, "cannot report the member's status");
        }
        if unauthorized {
            self.reload.notify_one();
        }
    }

    /// Step 3: the signed-CA answer to `csr`.
    async fn sign(
        &self,
        csr: &CsrStatus,
        desired: &Desired,
        now: OffsetDateTime,
    ) -> Result<SignedCa> {
        let (info, request) = plan::csr::accept(csr, &self.name, &self.spec.trust_domain)?;
        let signer = self
            .shared
            .signer()
            .ok_or_else(|| Error::Refused("the signer is not loaded yet".into()))?;
        let policy = SigningPolicy {
            ttl: desired.cluster_ca_ttl,
            constrain_to_trust_domain: desired.constrain_to_trust_domain,
        };
        let ask = Ask {
            policy: &policy,
            csr: &info,
            request: &request,
            now,
            root: desired
                .signing_roots
                .get(&self.spec.trust_domain)
                .map(String::as_str),
        };
        let budget = super::lock(&self.shared.sign_budgets)
            .entry(self.name.clone())
            .or_insert_with(|| plan::sign_budget::Budget::full(now))
            .check(now);
        if let Err(wait) = budget {
            return Err(Error::RateLimited(format!(
                "cluster {} had {} cluster CAs signed in a row (a limit against a member flooding the hub with CSRs); the next one can be signed in {} s",
                self.name,
                plan::sign_budget::BURST,
                wait.as_secs().max(1)
            )));
        }
        let issued = signer.sign(&ask).await?;
        if let Some(b) = super::lock(&self.shared.sign_budgets).get_mut(&self.name) {
            b.spend();
        }
        plan::chain::answer(csr, &issued, desired.renew_at_percent, now)
    }

    /// Step 4, remote secrets: renews the member's reader token when due (stored on the hub as
    /// `federator-reader-<cluster>`), and hands the member every other member's reader
    /// kubeconfig when that set changed. Returns the digest to record in `spec.peersDigest`
    /// and when the reader token is due next.
    async fn remote_secrets(
        &self,
        ct: &ClusterTrust,
        now: OffsetDateTime,
        notes: &mut Vec<Note>,
    ) -> Result<(String, Option<OffsetDateTime>)> {
        let hub = &self.shared.client;
        let secret = names::reader_credential_secret(&self.name);
        let renew_after = self.shared.opts.reader_token_renew_after;
        let not_due =
            |s: &StoredCredential| s.renew_at_or_after(renew_after).is_none_or(|due| now < due);
        let stored = self.shared.stored_credential(&secret, not_due).await?;
        // The stored token while it is not due (`Some(when it is due)`), else a new one.
        let current = stored
            .filter(not_due)
            .map(|s| s.renew_at_or_after(renew_after));
        let renew_at = match current {
            Some(due) => due,
            None => {
                let ttl = self.shared.opts.reader_token_ttl;
                let (token, expires) =
                    member_access::request_token(&self.client, names::READER_SERVICE_ACCOUNT, ttl)
                        .await?;
                let config = plumbing::config_from_yaml(self.credential.kubeconfig.expose_secret())
                    .await
                    .map_err(|source| Error::Kubeconfig {
                        what: self.spec.credential_secret.clone(),
                        source,
                    })?;
                let yaml = member_access::token_kubeconfig(&self.name, &config, &token)?;
                member_access::store_kubeconfig(hub, &secret, &self.name, &yaml, expires).await?;
                federator_api::failpoint!("hub.after-reader-token");
                info!(cluster = %self.name, expires = %federator_core::cert::rfc3339(expires), "issued a reader token");
                notes.push(Note::normal(
                    events::READER_TOKEN_ISSUED,
                    "RemoteSecrets",
                    format!(
                        "issued a token for the reader identity the other members' istiods use; it expires {}",
                        federator_core::cert::rfc3339(expires)
                    ),
                ));
                if self.shared.managed_secrets.get().is_none() {
                    // Without the store (its first list is not in yet) nothing else tells the
                    // other members; with it, the store's watch does once it holds the token.
                    self.shared.readers.send_modify(|g| *g = g.wrapping_add(1));
                }
                Some(member_access::renewal_due(now, expires, renew_after))
            }
        };
        let readers = self.shared.reader_kubeconfigs().await?;
        let members = super::lock(&self.shared.members).clone();
        let peers = plan::peers::plan(&self.name, &readers, &members, ct);
        if peers.write {
            write_peers(&self.client, &peers.peers).await?;
            federator_api::failpoint!("hub.after-peers");
            if peers.digest != ct.spec.peers_digest {
                info!(cluster = %self.name, peers = peers.peers.len(), "handed the member its peers");
                notes.push(Note::normal(
                    events::PEERS_UPDATED,
                    "RemoteSecrets",
                    format!(
                        "handed this cluster the reader credentials of {} peer(s): {}",
                        peers.peers.len(),
                        peers.peers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        Ok((peers.digest, renew_at))
    }

    /// Step 5: replaces the hub's token for the member before it expires, using the token
    /// itself (the hub's Role allows it to request tokens for its own ServiceAccount only).
    async fn renew_credential(&self, stored: &StoredCredential) -> Result<OffsetDateTime> {
        let (token, expires) = member_access::request_token(
            &self.client,
            names::HUB_SERVICE_ACCOUNT,
            stored.lifetime(),
        )
        .await?;
        let yaml = stored.with_token(&token)?;
        member_access::store_kubeconfig(
            &self.shared.client,
            &self.spec.credential_secret,
            &self.name,
            &yaml,
            expires,
        )
        .await?;
        federator_api::failpoint!("hub.after-credential-renewal");
        info!(cluster = %self.name, expires = %federator_core::cert::rfc3339(expires), "renewed the hub's token");
        Ok(expires)
    }
}

/// One member reconcile (see the module documentation for its steps).
pub async fn reconcile(_trigger: Arc<ClusterTrust>, member: Arc<Member>) -> Result<Action> {
    let m = &member;
    // 1. Read fresh.
    let api: Api<ClusterTrust> = Api::namespaced(m.client.clone(), names::NAMESPACE);
    let ct = match api.get_opt(names::CLUSTER_TRUST).await {
        Ok(Some(ct)) => ct,
        Ok(None) => return Ok(Action::await_change()),
        Err(e) => {
            m.unreachable(
                plumbing::is_status(&e, 401),
                &format!("cannot read ClusterTrust: {e}"),
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    *super::lock(&m.last_seen) = Some(ct.clone());
    let desired = m.shared.desired.borrow().clone();
    if desired.bundle_generation == 0 {
        // The federation has not been planned yet; its first plan triggers us.
        return Ok(Action::await_change());
    }

    // 2. Plan.
    let now = OffsetDateTime::now_utc();
    let plan = plan::member::plan_member(&ct, &m.name, &m.spec.trust_domain, &desired, now);
    let mut notes = plan.notes(&ct.spec);
    let mut spec = plan.spec.clone();
    let mut problems = Vec::new();

    // 3. Sign.
    if let Some(csr) = &plan.sign {
        match m.sign(csr, &desired, now).await {
            Ok(signed) => {
                info!(cluster = %m.name, generation = csr.generation, serial = %signed.serial, "signed a cluster CA");
                m.shared.metrics.signed(&m.name);
                notes.push(Note::normal(
                    events::CSR_SIGNED,
                    "Sign",
                    format!(
                        "signed cluster CA {} for CSR generation {}, valid until {}",
                        signed.serial, csr.generation, signed.not_after.0
                    ),
                ));
                spec.signed = Some(signed);
                federator_api::failpoint!("hub.after-sign");
            }
            Err(e) if e.retry_later() => {
                // Worth retrying: report it, keep everything as it is, come back with backoff.
                warn!(cluster = %m.name, error = %e, "signing failed; will retry");
                m.shared.metrics.sign_failed(&m.name);
                let problem = format!("CSR generation {} not signed yet: {e}", csr.generation);
                let note = Note::warning(events::SIGNING_FAILED, "Sign", problem.clone());
                report_status(&m.shared, &m.name, Some(&ct), true, &[problem], &[note]).await?;
                return Err(e);
            }
            Err(e) => {
                warn!(cluster = %m.name, error = %e, "refused to sign");
                m.shared.metrics.sign_failed(&m.name);
                let problem = format!("CSR generation {} not signed: {e}", csr.generation);
                notes.push(Note::warning(events::CSR_REFUSED, "Sign", problem.clone()));
                problems.push(problem);
            }
        }
    }

    // 4. Remote secrets, then write the spec. A newly signed CA goes out before the remote
    // secrets' requests: the member's `cacerts` should not wait on its peers.
    let mut current = ct.clone();
    let mut reader_due = None;
    if m.spec.remote_secrets {
        if spec.signed != ct.spec.signed {
            current = write_spec(&api, &m.name, &spec).await?;
        }
        match m.remote_secrets(&ct, now, &mut notes).await {
            Ok((digest, due)) => {
                spec.peers_digest = digest;
                reader_due = due;
            }
            Err(e) => {
                warn!(cluster = %m.name, error = %e, "remote secrets");
                problems.push(format!("remote secrets: {e}"));
            }
        }
    }
    if spec != current.spec {
        current = write_spec(&api, &m.name, &spec).await?;
    }

    // 5. The stored credential, read fresh: renew it when due; reload it when it changed (a
    // re-join or another replica's renewal).
    let settled =
        |s: &StoredCredential| !s.needs_renewal(now) && !s.kubeconfig_differs(&m.credential);
    match m
        .shared
        .stored_credential(&m.spec.credential_secret, settled)
        .await?
    {
        Some(stored) if stored.needs_renewal(now) => match m.renew_credential(&stored).await {
            Ok(expires) => {
                notes.push(Note::normal(
                    events::CREDENTIAL_RENEWED,
                    "RenewCredential",
                    format!(
                        "renewed the hub's token for this member; it expires {}",
                        federator_core::cert::rfc3339(expires)
                    ),
                ));
                m.reload.notify_one();
            }
            Err(e) => {
                let problem = format!("cannot renew the hub's token: {e}");
                notes.push(Note::warning(
                    events::CREDENTIAL_RENEWAL_FAILED,
                    "RenewCredential",
                    problem.clone(),
                ));
                problems.push(problem);
            }
        },
        Some(stored) if stored.kubeconfig_differs(&m.credential) => m.reload.notify_one(),
        _ => {}
    }

    // 6. Status and events.
    report_status(&m.shared, &m.name, Some(&current), true, &problems, &notes).await?;
    m.failures.reset();
    let heartbeat = m.shared.opts.heartbeat;
    let wait = [plan.wake_at, reader_due]
        .into_iter()
        .flatten()
        .min()
        .map(|t| Duration::try_from(t - now).unwrap_or(Duration::ZERO) + Duration::from_millis(50))
        .map_or(heartbeat, |d| d.min(heartbeat));
    Ok(Action::requeue(wait))
}

/// Writes the member's `ClusterTrust` spec (server-side apply; the hub owns the spec).
async fn write_spec(
    api: &Api<ClusterTrust>,
    member: &str,
    spec: &federator_api::member::ClusterTrustSpec,
) -> Result<ClusterTrust> {
    let written = plumbing::apply(
        api,
        &ClusterTrust::new(names::CLUSTER_TRUST, spec.clone()),
        names::HUB_FIELD_MANAGER,
    )
    .await
    .map_err(|e| Error::kube(&format!("write the ClusterTrust spec of {member}"), e))?;
    federator_api::failpoint!("hub.after-spec-write");
    Ok(written)
}

/// Writes the member's `federator-peers` Secret so that its data is exactly `peers`: a JSON
/// patch that sets the whole `data` map (`add` replaces a member that exists), since the hub's
/// Role allows `patch` of this one Secret but not `get`, so it cannot read what is there first.
async fn write_peers(
    member: &Client,
    peers: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(member.clone(), names::NAMESPACE);
    let data = serde_json::to_value(plumbing::byte_strings(peers.clone()))
        .map_err(Error::encode("the peers"))?;
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "add", "path": "/data", "value": data}
    ]))
    .map_err(Error::encode("the peers patch"))?;
    let params = kube::api::PatchParams {
        field_manager: Some(names::HUB_FIELD_MANAGER.to_owned()),
        ..kube::api::PatchParams::default()
    };
    api.patch(
        names::PEERS_SECRET,
        &params,
        &kube::api::Patch::<()>::Json(patch),
    )
    .await
    .map_err(|e| {
        Error::kube(
            &format!(
                "write Secret {}/{} (run `federator join` again if it is missing)",
                names::NAMESPACE,
                names::PEERS_SECRET
            ),
            e,
        )
    })?;
    Ok(())
}

/// Mirrors what is known about a member into its status on the hub (writing only on change)
/// and its metrics, and publishes `notes` as events on its `MemberCluster`.
async fn report_status(
    shared: &Shared,
    name: &str,
    ct: Option<&ClusterTrust>,
    reachable: bool,
    problems: &[String],
    notes: &[Note],
) -> Result<()> {
    let api: Api<MemberCluster> = Api::namespaced(shared.client.clone(), names::NAMESPACE);
    let Some(current) = current_member_cluster(shared, &api, name).await? else {
        return Ok(());
    };
    let status = plan::member::member_status(
        current.status.as_ref(),
        &StatusInputs {
            ct,
            reachable,
            hub_problems: problems,
            bundle_generation: shared.desired.borrow().bundle_generation,
            observed_generation: current.metadata.generation,
            now: OffsetDateTime::now_utc(),
            heartbeat: shared.opts.heartbeat,
        },
    );
    shared.metrics.set_member(name, &status);
    if current.status.as_ref() != Some(&status) {
        let written = plumbing::apply_status(&api, name, &status, names::HUB_FIELD_MANAGER)
            .await
            .map_err(|e| Error::kube("update a MemberCluster status", e))?;
        super::lock(&shared.status_written).insert(
            name.to_owned(),
            (current.metadata.resource_version.clone(), Arc::new(written)),
        );
        federator_api::failpoint!("hub.after-member-status");
    }
    let reference = current.object_ref(&());
    let reported = current
        .status
        .as_ref()
        .map(|s| s.problems.clone())
        .unwrap_or_default();
    for note in notes.iter().filter(|n| n.is_news(&reported)) {
        shared.events.publish(&reference, note).await;
    }
    Ok(())
}

/// The member's `MemberCluster` as it is now: from the federation controller's store (no
/// request), or the result of this hub's last status write while the store still shows the
/// version that write replaced; read fresh when the store is not there yet or lacks it.
async fn current_member_cluster(
    shared: &Shared,
    api: &Api<MemberCluster>,
    name: &str,
) -> Result<Option<Arc<MemberCluster>>> {
    let stored = shared.member_objects.get().and_then(|store| {
        store.get(&kube::runtime::reflector::ObjectRef::new(name).within(names::NAMESPACE))
    });
    let Some(stored) = stored else {
        return Ok(api
            .get_opt(name)
            .await
            .map_err(|e| Error::kube("read MemberCluster", e))?
            .map(Arc::new));
    };
    Ok(Some(match super::lock(&shared.status_written).get(name) {
        Some((replaced, written)) if stored.metadata.resource_version == *replaced => {
            written.clone()
        }
        _ => stored,
    }))
}

#[cfg(test)]
mod tests;
